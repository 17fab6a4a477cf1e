use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;

use crate::Error;

/// Decode the Arrow IPC stream the host sends (schema, one record batch, end
/// marker) without copying the column data: the bytes the component ABI
/// already copied into guest memory become the arrays' buffers.
///
/// A stream with a schema but no batch decodes to an empty batch of that
/// schema.
pub fn decode_ipc(bytes: Vec<u8>) -> Result<RecordBatch, Error> {
    let mut buffer = Buffer::from_vec(bytes);
    let mut decoder = StreamDecoder::new();
    let mut batch = None;
    while !buffer.is_empty() {
        if let Some(decoded) = decoder.decode(&mut buffer).map_err(invalid)? {
            if batch.replace(decoded).is_some() {
                return Err(Error::msg(
                    "Arrow IPC stream holds more than one record batch; the host sends one per call",
                ));
            }
        }
    }
    decoder.finish().map_err(invalid)?;
    match (batch, decoder.schema()) {
        (Some(batch), _) => Ok(batch),
        (None, Some(schema)) => Ok(RecordBatch::new_empty(schema)),
        (None, None) => Err(Error::msg("empty Arrow IPC stream: no schema")),
    }
}

fn invalid(error: arrow_schema::ArrowError) -> Error {
    Error::msg(format!("invalid Arrow IPC batch: {error}"))
}

#[cfg(test)]
mod tests {
    use arrow_ipc::writer::StreamWriter;

    use super::*;
    use crate::columns::tests::bizon_batch;
    use crate::BizonColumns;

    fn encode(batches: &[RecordBatch]) -> Vec<u8> {
        let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.into_inner().unwrap()
    }

    #[test]
    fn round_trips_a_bizon_batch() {
        let batch = bizon_batch(&[("r0", r#"{"a":1}"#), ("r1", r#"{"b":"é"}"#)]);
        let decoded = decode_ipc(encode(std::slice::from_ref(&batch))).unwrap();
        assert_eq!(decoded, batch);
        assert_eq!(BizonColumns::new(&decoded).unwrap().source_data(1), r#"{"b":"é"}"#);
    }

    #[test]
    fn an_empty_batch_and_a_schema_only_stream_both_decode_to_zero_rows() {
        let empty = bizon_batch(&[]);
        assert_eq!(decode_ipc(encode(std::slice::from_ref(&empty))).unwrap(), empty);

        let writer = StreamWriter::try_new(Vec::new(), &empty.schema()).unwrap();
        let schema_only = writer.into_inner().unwrap();
        let decoded = decode_ipc(schema_only).unwrap();
        assert_eq!(decoded.num_rows(), 0);
        assert_eq!(decoded.schema(), empty.schema());
    }

    #[test]
    fn garbage_and_several_batches_are_errors() {
        assert!(decode_ipc(vec![]).is_err());
        assert!(decode_ipc(b"not arrow at all".to_vec()).is_err());
        let batch = bizon_batch(&[("r0", "{}")]);
        let err = decode_ipc(encode(&[batch.clone(), batch])).unwrap_err();
        assert!(err.message().contains("more than one"), "{err}");
    }
}
