"""paho-mqtt peer for the broker tests: usage paho_client.py HOST PORT 311|5.

Checks, against the broker under test: token login, QoS 0/1/2 delivery between two
clients, a retained message reaching a late subscriber, an ACL-denied subscription
(SUBACK failure) and, on v5, an ACL-denied publish answered with PUBACK 0x87.
Prints OK and exits 0 on success.
"""
import sys
import threading
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

host, port, ver = sys.argv[1], int(sys.argv[2]), sys.argv[3]
proto = mqtt.MQTTv5 if ver == "5" else mqtt.MQTTv311
TIMEOUT = 8


def client(cid, token):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto)
    c.username_pw_set(cid, token)
    connected = threading.Event()
    c.on_connect = lambda cl, ud, fl, rc, pr=None: (connected.set() if not rc.is_failure else None)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    assert connected.wait(TIMEOUT), f"{cid}: no CONNACK success"
    return c


got = []
got_ev = threading.Event()
subacks = {}
suback_ev = threading.Event()

sub = client("app", "ta")


def on_message(cl, ud, msg):
    got.append((msg.topic, msg.payload.decode(), msg.qos, msg.retain))
    if len(got) >= 4:
        got_ev.set()


def on_subscribe(cl, ud, mid, codes, props=None):
    subacks[mid] = [c.value for c in codes]
    suback_ev.set()


sub.on_message = on_message
sub.on_subscribe = on_subscribe

pub = client("d1", "t1")
pub.publish("devices/d1/state", "retained", qos=1, retain=True).wait_for_publish(TIMEOUT)

_, mid_ok = sub.subscribe("devices/d1/#", qos=2)
assert suback_ev.wait(TIMEOUT)
suback_ev.clear()
_, mid_bad = sub.subscribe("devices/#", qos=1)
assert suback_ev.wait(TIMEOUT)
assert subacks[mid_ok] == [2], subacks
assert subacks[mid_bad][0] >= 0x80, subacks

for q in (0, 1, 2):
    pub.publish("devices/d1/telemetry", f"q{q}", qos=q).wait_for_publish(TIMEOUT)
assert got_ev.wait(TIMEOUT), got
assert got[0] == ("devices/d1/state", "retained", 1, True), got
assert sorted(p for (_, p, _, _) in got[1:]) == ["q0", "q1", "q2"], got

if proto == mqtt.MQTTv5:
    denied = threading.Event()
    codes = []

    def on_publish(cl, ud, mid, rc, props=None):
        codes.append(rc.value)
        denied.set()

    pub.on_publish = on_publish
    pub.publish("devices/d2/telemetry", "spoof", qos=1)
    assert denied.wait(TIMEOUT)
    assert codes == [0x87], codes

pub.disconnect()
sub.disconnect()
print("OK")
