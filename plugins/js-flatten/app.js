// kafka-flatten in JavaScript: Bizon's Kafka record {topic, offset,
// partition, timestamp, keys, headers, value, schema} becomes {...value,
// __kafka_offset, __kafka_partition, __kafka_topic, __kafka_timestamp}, as
// plugins/kafka-flatten (Rust) does. Config: prefix, fields, tombstones
// ("drop" or "error").
import { defineTransform } from '@bizon/plugin';

const WRAPPER = ['topic', 'offset', 'partition', 'timestamp', 'keys', 'headers', 'schema'];

let copies = [];
let dropTombstones = false;

export const transform = defineTransform({
  name: 'js-flatten',

  open(config) {
    const prefix = config.prefix ?? '__kafka_';
    const fields = config.fields ?? ['offset', 'partition', 'topic', 'timestamp'];
    for (const field of fields) {
      if (!WRAPPER.includes(field)) {
        throw new Error(`fields: \`${field}\` is not a key of Bizon's Kafka record; expected some of ${WRAPPER.join(', ')}`);
      }
    }
    copies = fields.map((field) => [field, prefix + field]);
    dropTombstones = (config.tombstones ?? 'error') === 'drop';
  },

  transform(record) {
    const data = record.data;
    if (data === null || typeof data !== 'object' || !('value' in data)) {
      throw new Error("source_data has no `value`: not Bizon's Kafka record");
    }
    const value = data.value;
    if (value === null) {
      if (dropTombstones) return [];
      throw new Error('the message has no value (a tombstone); set `tombstones: drop` to drop such messages');
    }
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`the message value is not a JSON object: ${JSON.stringify(value).slice(0, 80)}`);
    }
    for (const [field, key] of copies) value[key] = data[field] ?? null;
    return value;
  },
});
