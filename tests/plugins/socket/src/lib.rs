//! A plugin that opens a TCP connection, so its component imports
//! `wasi:sockets`: the host loads it (every plugin may link sockets) and,
//! without a grant, refuses the connection when it is made.

use bizon_sdk::{export_destination, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};

struct Socket;

impl Destination for Socket {
    const NAME: &'static str = "hostile-socket";

    fn open(_config: Config) -> Result<Self, Error> {
        Ok(Socket)
    }

    fn write(&mut self, _batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        match std::net::TcpStream::connect("127.0.0.1:9") {
            Ok(_) => Err(WriteError::fatal("connected to 127.0.0.1:9")),
            Err(e) => Err(WriteError::fatal(format!(
                "connect failed: {e} ({} rows not written)",
                info.num_rows
            ))),
        }
    }
}

export_destination!(Socket);
