"""kafka-flatten in Python: Bizon's Kafka record {topic, offset, partition,
timestamp, keys, headers, value, schema} becomes {**value, __kafka_offset,
__kafka_partition, __kafka_topic, __kafka_timestamp}, as plugins/kafka-flatten
(Rust) does. Config: prefix, fields, tombstones ("drop" or "error")."""

import json

from bizon_plugin import Transform

WRAPPER = ("topic", "offset", "partition", "timestamp", "keys", "headers", "schema")


class KafkaFlatten(Transform):
    name = "python-flatten"

    def open(self, config):
        self.prefix = config.get("prefix", "__kafka_")
        fields = config.get("fields", ["offset", "partition", "topic", "timestamp"])
        for field in fields:
            if field not in WRAPPER:
                raise ValueError(f"fields: `{field}` is not a key of Bizon's Kafka record; expected some of {', '.join(WRAPPER)}")
        self.copies = [(field, self.prefix + field) for field in fields]
        self.drop_tombstones = config.get("tombstones", "error") == "drop"

    def transform(self, record):
        data = record.data
        if not isinstance(data, dict) or "value" not in data:
            raise ValueError("source_data has no `value`: not Bizon's Kafka record")
        value = data["value"]
        if value is None:
            if self.drop_tombstones:
                return []
            raise ValueError("the message has no value (a tombstone); set `tombstones: drop` to drop such messages")
        if not isinstance(value, dict):
            raise ValueError(f"the message value is not a JSON object: {json.dumps(value)[:80]}")
        for field, key in self.copies:
            value[key] = data.get(field)
        return value
