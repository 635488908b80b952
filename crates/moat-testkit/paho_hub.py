"""paho-mqtt as a real peer of the Moat hub (crates/moat/tests: mqtt.rs, storage.rs; moat_testkit::paho).

  paho_hub.py attempt HOST PORT 311|5 CLIENT_ID [--cafile F] [--cert C --key K] [-u U -P P]
      Connects once and, if accepted, publishes QoS 1 to devices/CLIENT_ID/telemetry.
      Prints one line: "accepted", "connack N" (the CONNACK refusal code), or
      "closed: WHY" (the TLS layer or the hub closed the connection before any CONNACK).

  paho_hub.py flow HOST PORT 311|5 CAFILE CREDS_DIR
      With hub-issued certificates a.crt/b.crt/outsider.crt (a and b share the group "team"
      whose policy allows groups/team/#): QoS 0/1/2 from a to b, a publish outside the
      outsider's ACL that must not arrive (v5: PUBACK 0x87), a retained message for a late
      subscriber, and a will on abrupt loss. Prints OK or fails with the reason.

  paho_hub.py client HOST PORT 311|5 CLIENT_ID [-u U -P P] [--persistent]
                     [--cafile F --cert C --key K]
      One connection driven line by line from stdin, for tests that act between packets.
      Prints "connack N" (or "closed: WHY") first. Commands:
        sub FILTER QOS          -> "suback CODE"
        pub TOPIC PAYLOAD QOS   -> "sent MID" at once, "ack MID CODE" when PUBACK/PUBCOMP
                                   arrives (CODE: the v5 reason; 0 on 3.1.1)
        pubx TOPIC HEX QOS [NAME=VALUE ...]
                                -> as pub, the payload given in hex, with v5 user properties
        msgs                    -> "msg TOPIC PAYLOAD DUP" for each message so far, "end"
        msgsx                   -> "msgx TOPIC HEX PROPS" for each message so far (PROPS: the
                                   v5 user properties as a JSON list of pairs), "end"
        quit                    -> DISCONNECT, exit
      A connection lost meanwhile prints "closed: WHY". --persistent: clean start 0 (v5 with
      a session expiry of one hour). --cafile/--cert/--key: TLS with a client certificate.
"""
import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 8


def make(cid, version, cafile=None, cert=None, key=None, user=None, password=None, will=None):
    proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto)
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
        if cert:
            ctx.load_cert_chain(cert, key)
        c.tls_set_context(ctx)
    if user is not None:
        c.username_pw_set(user, password)
    if will:
        c.will_set(*will)
    return c


class Watch:
    """Records the CONNACK (or its absence) and every message."""

    def __init__(self, c):
        self.connack = None
        self.closed = None
        self.ev = threading.Event()
        self.msgs = []
        self.msg_ev = threading.Condition()
        self.subacks = {}
        self.sub_ev = threading.Condition()
        c.on_connect = self.on_connect
        c.on_disconnect = self.on_disconnect
        c.on_message = self.on_message
        c.on_subscribe = self.on_subscribe

    def on_connect(self, cl, ud, flags, rc, props=None):
        self.connack = rc.value
        self.ev.set()

    def on_disconnect(self, cl, ud, flags, rc, props=None):
        if self.connack is None:
            self.closed = str(rc)
        self.ev.set()

    def on_message(self, cl, ud, msg):
        with self.msg_ev:
            self.msgs.append((msg.topic, msg.payload.decode(), msg.qos, msg.retain))
            self.msg_ev.notify_all()

    def on_subscribe(self, cl, ud, mid, codes, props=None):
        with self.sub_ev:
            self.subacks[mid] = [c.value for c in codes]
            self.sub_ev.notify_all()

    def wait_msgs(self, n, timeout=TIMEOUT):
        with self.msg_ev:
            self.msg_ev.wait_for(lambda: len(self.msgs) >= n, timeout)
            return list(self.msgs)

    def wait_suback(self, mid):
        with self.sub_ev:
            assert self.sub_ev.wait_for(lambda: mid in self.subacks, TIMEOUT), "no SUBACK"
            return self.subacks[mid]


def attempt(a):
    c = make(a.client_id, a.version, a.cafile, a.cert, a.key, a.user, a.password)
    w = Watch(c)
    try:
        c.connect(a.host, a.port, keepalive=30)
    except (ssl.SSLError, OSError) as e:
        print(f"closed: {type(e).__name__}: {e}")
        return
    c.loop_start()
    if not w.ev.wait(TIMEOUT):
        print("closed: no CONNACK in time")
        c.loop_stop()
        return
    if w.connack is None:
        print(f"closed: {w.closed}")
    elif w.connack != 0:
        print(f"connack {w.connack}")
    else:
        info = c.publish(f"devices/{a.client_id}/telemetry", "hello", qos=1)
        info.wait_for_publish(TIMEOUT)
        print("accepted" if info.is_published() else "closed: no PUBACK")
        c.disconnect()
    c.loop_stop()


def connected(cid, a, **kw):
    d = a.creds
    c = make(cid, a.version, a.cafile, os.path.join(d, f"{cid}.crt"), os.path.join(d, f"{cid}.key"), **kw)
    w = Watch(c)
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    assert w.ev.wait(TIMEOUT) and w.connack == 0, f"{cid}: not accepted ({w.connack}, {w.closed})"
    return c, w


def flow(a):
    b, bw = connected("b", a)
    _, mid = b.subscribe("groups/team/chat", qos=2)
    assert bw.wait_suback(mid) == [2], bw.subacks
    pub, _ = connected("a", a)
    for q in (0, 1, 2):
        pub.publish("groups/team/chat", f"m{q}", qos=q).wait_for_publish(TIMEOUT)
    got = bw.wait_msgs(3)
    assert [(m[1], m[2]) for m in got] == [("m0", 0), ("m1", 1), ("m2", 2)], got

    # Outside the outsider's ACL: refused (v5 PUBACK 0x87) and never delivered.
    out, ow = connected("outsider", a)
    acks = []
    out.on_publish = lambda cl, ud, mid, rc, props=None: acks.append(rc.value)
    out.publish("groups/team/chat", "intruder", qos=1).wait_for_publish(TIMEOUT)
    if a.version == "5":
        assert acks == [0x87], acks
    _, mid = out.subscribe("groups/team/#", qos=1)
    assert ow.wait_suback(mid)[0] >= 0x80, ow.subacks
    # A marker from an allowed publisher proves the intruder's message was not just late.
    pub.publish("groups/team/chat", "marker", qos=1).wait_for_publish(TIMEOUT)
    got = bw.wait_msgs(4)
    assert [m[1] for m in got[3:]] == ["marker"], got

    # Retained: a late subscriber gets it with the retain flag.
    pub.publish("groups/team/state", "on", qos=1, retain=True).wait_for_publish(TIMEOUT)
    _, mid = b.subscribe("groups/team/state", qos=1)
    assert bw.wait_suback(mid) == [1], bw.subacks
    got = bw.wait_msgs(5)
    assert got[4][:2] == ("groups/team/state", "on") and got[4][3], got

    # Will: a dies without DISCONNECT; b gets the will.
    _, mid = b.subscribe("groups/team/will", qos=1)
    assert bw.wait_suback(mid) == [1], bw.subacks
    pub.disconnect()
    pub.loop_stop()
    dying, _ = connected("a", a, will=("groups/team/will", "a lost", 1, False))
    dying.loop_stop()
    dying.socket().shutdown(socket.SHUT_RDWR)
    got = bw.wait_msgs(6)
    assert got[5][:2] == ("groups/team/will", "a lost"), got
    for c in (b, out):
        c.disconnect()
        c.loop_stop()
    print("OK")


def client(a):
    out_lock = threading.Lock()

    def say(line):
        with out_lock:
            print(line, flush=True)

    props = None
    proto = mqtt.MQTTv5 if a.version == "5" else mqtt.MQTTv311
    kw = {}
    if a.version == "311":
        kw["clean_session"] = not a.persistent
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.client_id, protocol=proto, **kw)
    if a.user is not None:
        c.username_pw_set(a.user, a.password)
    if a.cafile:
        ctx = ssl.create_default_context(cafile=a.cafile)
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
        c.tls_set_context(ctx)
    msgs = []
    raw = []
    connected = threading.Event()

    def on_connect(cl, ud, flags, rc, p=None):
        say(f"connack {rc.value}")
        connected.set()

    def on_disconnect(cl, ud, flags, rc, p=None):
        say(f"closed: {rc}")
        connected.set()

    def on_publish(cl, ud, mid, rc, p=None):
        say(f"ack {mid} {rc.value}")

    def on_subscribe(cl, ud, mid, codes, p=None):
        say("suback " + " ".join(str(x.value) for x in codes))

    def on_message(cl, ud, m):
        msgs.append((m.topic, m.payload.decode(errors="replace"), int(m.dup)))
        props = getattr(m.properties, "UserProperty", None) if m.properties else None
        raw.append((m.topic, m.payload.hex(), list(props or [])))

    c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish
    c.on_subscribe, c.on_message = on_subscribe, on_message
    if a.version == "5":
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes
        props = Properties(PacketTypes.CONNECT)
        if a.persistent:
            props.SessionExpiryInterval = 3600
        kw = {"clean_start": not a.persistent, "properties": props}
    else:
        kw = {}
    try:
        c.connect(a.host, a.port, keepalive=60, **kw)
    except OSError as e:
        say(f"closed: {type(e).__name__}: {e}")
        return
    c.loop_start()
    if not connected.wait(TIMEOUT):
        say("closed: no CONNACK in time")
        return
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "sub":
            c.subscribe(cmd[1], qos=int(cmd[2]))
        elif cmd[0] == "pub":
            info = c.publish(cmd[1], cmd[2], qos=int(cmd[3]))
            say(f"sent {info.mid}")
        elif cmd[0] == "pubx":
            props = None
            if a.version == "5" and len(cmd) > 4:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [tuple(kv.split("=", 1)) for kv in cmd[4:]]
            info = c.publish(cmd[1], bytes.fromhex(cmd[2]), qos=int(cmd[3]), properties=props)
            say(f"sent {info.mid}")
        elif cmd[0] == "msgs":
            for t, p, dup in list(msgs):
                say(f"msg {t} {p} {dup}")
            say("end")
        elif cmd[0] == "msgsx":
            for t, p, props in list(raw):
                say(f"msgx {t} {p} {json.dumps(props)}")
            say("end")
        elif cmd[0] == "quit":
            break
    c.disconnect()
    c.loop_stop()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    at = sub.add_parser("attempt")
    fl = sub.add_parser("flow")
    for s in (at, fl):
        s.add_argument("host")
        s.add_argument("port", type=int)
        s.add_argument("version", choices=["311", "5"])
    at.add_argument("client_id")
    at.add_argument("--cafile")
    at.add_argument("--cert")
    at.add_argument("--key")
    at.add_argument("-u", "--user")
    at.add_argument("-P", "--pass", dest="password")
    fl.add_argument("cafile")
    fl.add_argument("creds")
    cl = sub.add_parser("client")
    cl.add_argument("host")
    cl.add_argument("port", type=int)
    cl.add_argument("version", choices=["311", "5"])
    cl.add_argument("client_id")
    cl.add_argument("-u", "--user")
    cl.add_argument("-P", "--pass", dest="password")
    cl.add_argument("--persistent", action="store_true")
    cl.add_argument("--cafile")
    cl.add_argument("--cert")
    cl.add_argument("--key")
    a = p.parse_args()
    {"attempt": attempt, "flow": flow, "client": client}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
