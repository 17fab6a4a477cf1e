"""Helpers for bench/kafka-bizon.sh (run with bench/bizon/.venv's python).

produce SERVERS TOPIC N PARTITIONS
    Creates TOPIC with PARTITIONS partitions and produces N messages of the
    same shape as host/benches/kafka.rs (a ~330-byte Debezium-style JSON value,
    a JSON key, one header), message i to partition i % PARTITIONS; the last
    message of each partition in a batch of its own (tansu answers ListOffsets
    with the last batch's base offset + 1, not the last offset + 1, so a
    partition's last batch must hold one message for its end to be exact).
count FILE
    Prints `lines=L distinct=D` for Bizon's NDJSON output: rows, and distinct
    (topic, partition, offset) among them.
"""

import json
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def value(i):
    return (
        '{"before":null,"after":{"id":%d,"email":"user%d@example.com","name":"User number %d",'
        '"score":%s,"active":%s,"tags":["a","b","c"]},"source":{"name":"pg_main","db":"shop",'
        '"table":"users","ts_ms":%d},"op":"c","ts_ms":%d}'
    ) % (i, i, i, repr(i * 0.5), "true" if i % 2 == 0 else "false", 1714566600000 + i, 1714566600000 + i)


def produce(servers, topic, n, partitions):
    admin = AdminClient({"bootstrap.servers": servers})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        f.result()
    started = time.perf_counter()
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1000000,
        }
    )
    last = n - partitions

    def send(i):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value(i).encode(),
                    key=('{"id":%d}' % i).encode(),
                    partition=i % partitions,
                    headers=[("source", b"bench")],
                )
                return
            except BufferError:
                producer.poll(0.05)

    for i in range(last):
        send(i)
    producer.flush(60)
    for i in range(last, n):
        send(i)
        producer.flush(60)
    print(f"produced {n} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def count(path):
    lines, seen = 0, set()
    with open(path) as f:
        for line in f:
            lines += 1
            data = json.loads(json.loads(line)["source_data"])
            seen.add((data["topic"], data["partition"], data["offset"]))
    print(f"lines={lines} distinct={len(seen)}")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        count(sys.argv[2])
