"""The benches' lean QoS 1 publisher against a real Mosquitto: every message arrives whole
(topics and payloads of every remaining-length size), every PUBACK is counted, and
retained messages are retained."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from support import start_mosquitto, wait_until


def test_raw_publisher_delivers_every_message_whole(tmp_path: Path, loadgen: ModuleType
                                                     ) -> None:
    broker = start_mosquitto(tmp_path)
    got: list[tuple[str, bytes, bool]] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="lg-sub")
    subscribed: list[int] = []
    sub.on_subscribe = lambda _c, _u, mid, *_: subscribed.append(mid)
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, m.retain))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        _, mid = sub.subscribe("lg/#", qos=1)
        wait_until(lambda: mid in subscribed, 30, what="the subscription")
        # payload sizes across the 1-, 2- and 3-byte remaining lengths (§2.2.3)
        sizes = [0, 1, 100, 127, 128, 200, 16_383, 16_384, 70_000]
        sent = [(f"lg/{i}/x", bytes([i % 251]) * n) for i, n in enumerate(sizes * 30)]
        pub = loadgen.RawPublisher(broker.port, "lg-pub", window=50)  # the window is hit
        for topic, payload in sent:
            pub.publish(topic, payload)
        pub.flush()
        wait_until(lambda: pub.acked == len(sent), 60, what="every PUBACK counted")
        pub.close()
        wait_until(lambda: len(got) == len(sent), 60, what="every message delivered")
        assert sorted((t, p) for t, p, _ in got) == sorted(sent)
        assert pub.sent == pub.acked == len(sent)
        # a retained message is kept for a later subscriber
        pub = loadgen.RawPublisher(broker.port, "lg-pub2")
        pub.publish("lg/retained", b"kept", retain=True)
        pub.close()
        late: list[bytes] = []
        sub2 = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="lg-2")
        sub2.on_message = lambda _c, _u, m: late.append(m.payload) if m.retain else None
        sub2.connect("127.0.0.1", broker.port)
        sub2.loop_start()
        sub2.subscribe("lg/retained", qos=1)
        wait_until(lambda: late == [b"kept"], 30, what="the retained message")
        sub2.loop_stop()
        sub2.disconnect()
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
