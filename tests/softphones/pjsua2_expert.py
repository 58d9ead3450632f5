#!/usr/bin/env python3
"""An expert's softphone for the suite: PJSIP (pjsua2, from PyPI's
pjsua2-python) registers with digest at the registrar given, answers the
first call, says the WAV given into it and records what it hears, until
the call ends or the time runs out. No sound card: PJSIP's null device.

    pjsua2_expert.py REGISTRAR USER PASSWORD SAYS.wav HEARD.wav SECONDS

Prints "registered <code>" when the registrar answers, "answered" and
"ended" as the call goes; exits 0 when a call was answered and ended.
"""
import sys
import time

import pjsua2 as pj

registrar, user, password, says, heard, seconds = sys.argv[1:7]
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
endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
endpoint.libStart()
endpoint.audDevManager().setNullDev()
for codec in endpoint.codecEnum2():
    priority = 255 if codec.codecId.startswith("PCMU/") else 0
    endpoint.codecSetPriority(codec.codecId, priority)

account_config = pj.AccountConfig()
account_config.idUri = f"sip:{user}@{registrar}"
account_config.regConfig.registrarUri = f"sip:{registrar}"
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
