#!/usr/bin/env python3
"""An expert's softphone for the suite: PJSIP (pjsua2, from PyPI's
pjsua2-python) registers with digest at the registrar given, answers the
first call, says the WAV given into it and records what it hears, until
the call ends or the time runs out. No sound card: PJSIP's null device.

    pjsua2_expert.py REGISTRAR USER PASSWORD SAYS.wav HEARD.wav SECONDS
        [--tls CA.crt [CERT.crt KEY.key]]

With --tls it speaks SIP over TLS (1.2 or newer) only, checking the
server's certificate against CA.crt; with CERT and KEY it also serves
that certificate on a TLS listener of its own. REGISTRAR "-" registers
nowhere: the phone waits on its listener, whose port it prints as
"listening <port>", for a call dialled to it.

Prints "registered <code>" when the registrar answers, "answered" and
"ended" as the call goes; exits 0 when a call was answered and ended.
"""
import sys
import time

import pjsua2 as pj

registrar, user, password, says, heard, seconds = sys.argv[1:7]
tls = sys.argv[8:] if sys.argv[7:8] == ["--tls"] else None
state = {"registered": None, "answered": False, "ended": False, "call": None}


class Call(pj.Call):
    def __init__(self, account, call_id):
        super().__init__(account, call_id)
        self.player = None
        self.recorder = None

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(i)
                self.player = pj.AudioMediaPlayer()
                self.player.createPlayer(says, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(audio)
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(heard)
                audio.startTransmit(self.recorder)

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            state["answered"] = True
            print("answered", flush=True)
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            state["ended"] = True
            print("ended", flush=True)


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
config.logConfig.level = 1
config.uaConfig.userAgent = "pjsua2 expert (tollbridge suite)"
endpoint.libInit(config)
transport = pj.TransportConfig()
transport.boundAddress = "127.0.0.1"
transport.port = 0
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
if registrar == "-":
    account_config.idUri = f"sip:{user}@127.0.0.1"
else:
    account_config.idUri = f"sip:{user}@{registrar}"
    account_config.regConfig.registrarUri = f"sip:{registrar}{suffix}"
    account_config.regConfig.timeoutSec = 120
    account_config.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
account = Account()
account.create(account_config)

deadline = time.time() + float(seconds)
while time.time() < deadline and not state["ended"]:
    endpoint.libHandleEvents(20)

state["call"] = None
account.shutdown()
endpoint.libDestroy()
sys.exit(0 if state["answered"] and state["ended"] else 1)
