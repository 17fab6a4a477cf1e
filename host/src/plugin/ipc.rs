//! A batch in the encoding the plugin asked for, written into a buffer the
//! caller keeps: a fresh buffer per batch costs more in page faults than the
//! encoding itself.

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::ArrowError;

use super::bindings::bizon::destination::types::InputFormat;

/// Replaces `out`'s content with `batch` as an Arrow IPC stream (schema,
/// batch, end marker) or as newline-delimited JSON objects.
pub fn encode(format: InputFormat, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
    out.clear();
    match format {
        InputFormat::ArrowIpc => {
            let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
            writer.write(batch)?;
            writer.finish()
        }
        InputFormat::Ndjson => {
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut *out);
            writer.write(batch)?;
            writer.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_ipc::reader::StreamReader;

    fn batch() -> RecordBatch {
        let mut ids = crate::record::BizonIdGenerator::new();
        let mut builder = crate::record::RecordBuilder::new("users".into());
        let record = crate::record::SourceRecord {
            id: "1".into(),
            timestamp_us: 0,
            data: r#"{"name":"Zoë 🚀"}"#.into(),
            destination_id: None,
        };
        builder.append(&mut ids, 0, &record);
        builder.finish(0).unwrap()
    }

    #[test]
    fn ipc_round_trips_and_reuses_the_buffer() {
        let batch = batch();
        let mut out = Vec::new();
        encode(InputFormat::ArrowIpc, &batch, &mut out).unwrap();
        let first_len = out.len();
        encode(InputFormat::ArrowIpc, &batch, &mut out).unwrap();
        assert_eq!(out.len(), first_len, "the buffer is replaced, not appended to");
        let decoded: Vec<_> = StreamReader::try_new(out.as_slice(), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(decoded, vec![batch]);
    }

    #[test]
    fn ndjson_is_one_object_per_row() {
        let batch = batch();
        let mut out = Vec::new();
        encode(InputFormat::Ndjson, &batch, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(row["source_data"], batch.column(5).as_string::<i32>().value(0));
    }
}
