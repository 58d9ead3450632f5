#!/usr/bin/env python3
"""A softphone for the suite: PJSIP (pjsua2, from PyPI's pjsua2-python)
as an expert's phone or as a caller. It says the WAV given into its call
and records what it hears, until the call ends or the time runs out. No
sound card: PJSIP's null device.

    pjsua2_expert.py REGISTRAR USER PASSWORD SAYS.wav HEARD.wav SECONDS
        [--tls CA.crt [CERT.crt KEY.key]] [--srtp off|optional|mandatory]
        [--call URI] [--log FILE]

REGISTRAR is where it registers as USER with digest (PASSWORD); "-"
registers nowhere: it waits on its listener, whose port it prints as
"listening <port>", for a call dialled to it, or with --call places one
to URI itself, as USER (its From).

With --tls it speaks SIP over TLS (1.2 or newer) only, checking the
server's certificate against CA.crt; with CERT and KEY it also serves that
certificate on its own listener. --srtp sets its media: "mandatory" is
RTP/SAVP with SDES keys only, "optional" offers both, "off" (the
default) plain RTP.

Prints "registered <code>" when the registrar answers, "answered" and
"ended" as the call goes; exits 0 when a call was answered and ended.
"""
import argparse
import os
import sys
import time

import pjsua2 as pj

parser = argparse.ArgumentParser()
for name in ["registrar", "user", "password", "says", "heard", "seconds"]:
    parser.add_argument(name)
parser.add_argument("--tls", nargs="+")
parser.add_argument("--srtp", choices=["off", "optional", "mandatory"], default="off")
parser.add_argument("--call")
parser.add_argument("--log", help="PJSIP's own log, at level 4, goes here")
args = parser.parse_args()
state = {"registered": None, "answered": False, "ended": False, "call": None}


class Call(pj.Call):
    def __init__(self, account, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(account, call_id)
        self.player = None
        self.recorder = None

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                if self.player is not None:
                    continue
                audio = self.getAudioMedia(i)
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(args.says, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(audio)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(args.heard)
                audio.startTransmit(self.recorder)

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            state["answered"] = True
            print("answered", flush=True)
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            state["ended"] = True
            print("ended", info.lastStatusCode, flush=True)


class Account(pj.Account):
    def onRegState(self, prm):
        state["registered"] = prm.code
        print("registered", prm.code, flush=True)

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        state["call"] = call
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)


endpoint = pj.Endpoint()
endpoint.libCreate()
config = pj.EpConfig()
config.logConfig.level = 4 if args.log else 1
config.logConfig.consoleLevel = 1
if args.log:
    config.logConfig.filename = args.log
config.uaConfig.userAgent = "pjsua2 expert (tollbridge suite)"
endpoint.libInit(config)
transport = pj.TransportConfig()
transport.boundAddress = "127.0.0.1"
transport.port = 0
tls = args.tls
if tls:
    transport.tlsConfig.CaListFile = tls[0]
    transport.tlsConfig.verifyServer = True
    transport.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    if len(tls) >= 3:
        transport.tlsConfig.certFile = tls[1]
        transport.tlsConfig.privKeyFile = tls[2]
    transport_id = endpoint.transportCreate(pj.PJSIP_TRANSPORT_TLS, transport)
else:
    transport_id = endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
print("listening", endpoint.transportGetInfo(transport_id).localName.split(":")[-1], flush=True)
endpoint.libStart()
endpoint.audDevManager().setNullDev()
for codec in endpoint.codecEnum2():
    priority = 255 if codec.codecId.startswith("PCMU/") else 0
    endpoint.codecSetPriority(codec.codecId, priority)

account_config = pj.AccountConfig()
suffix = ";transport=tls" if tls else ""
if args.registrar == "-":
    account_config.idUri = f"sip:{args.user}@127.0.0.1"
else:
    account_config.idUri = f"sip:{args.user}@{args.registrar}"
    account_config.regConfig.registrarUri = f"sip:{args.registrar}{suffix}"
    account_config.regConfig.timeoutSec = 120
    account_config.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
    )
account_config.mediaConfig.srtpUse = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}[args.srtp]
# SDES over plain UDP signalling too (the suite's own loopback).
account_config.mediaConfig.srtpSecureSignaling = 0
account = Account()
account.create(account_config)

if args.call:
    call = Call(account)
    state["call"] = call
    call.makeCall(args.call, pj.CallOpParam(True))

deadline = time.time() + float(args.seconds)
while time.time() < deadline and not state["ended"]:
    endpoint.libHandleEvents(20)

# The recorder's file is closed by the library's shutdown; the Python
# wrappers are then left to the process's end without their destructors
# (a finished outgoing call's would assert on its gone call id).
account.shutdown()
endpoint.libDestroy()
sys.stdout.flush()
os._exit(0 if state["answered"] and state["ended"] else 1)
