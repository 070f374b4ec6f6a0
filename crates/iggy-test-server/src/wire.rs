//! Request and reply frames of Iggy 0.11's TCP protocol: a 256-byte header (the VSR
//! `RequestHeader` / `ReplyHeader`) and a body. The header structs and codecs come from
//! `iggy_binary_protocol`; this module only glues them to the socket.

use bytes::{Bytes, BytesMut};
use iggy_binary_protocol::codes::LOGOUT_USER_CODE;
use iggy_binary_protocol::{Command, HEADER_SIZE, Operation, ReplyHeader, RequestHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ErrorCode;

/// Requests larger than this are refused (the connection is closed).
pub(crate) const MAX_REQUEST_SIZE: usize = 64 * 1024 * 1024;

/// Bytes 196..200 of the request header (the start of `reserved`) carry the command
/// code of a `NonReplicated` request.
const NON_REPLICATED_CODE_OFFSET: usize = 0;

/// A decoded request: its header, the command code it stands for, and its body.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) header: RequestHeader,
    pub(crate) code: Code,
    pub(crate) body: Bytes,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// A login; password or token is told apart by decoding the body.
    Register,
    /// Any other command, by its classic command code.
    Command(u32),
}

/// Why reading a request failed; every case ends the connection.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection (cleanly, between requests).
    Closed,
    /// An I/O error.
    Io(std::io::Error),
    /// The frame is not a request this server understands.
    Malformed(String),
}

impl From<std::io::Error> for ReadError {
    fn from(error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Closed
        } else {
            ReadError::Io(error)
        }
    }
}

/// Reads one request frame.
pub(crate) async fn read_request(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Request, ReadError> {
    let mut header_bytes = [0u8; HEADER_SIZE];
    reader.read_exact(&mut header_bytes).await?;
    let header: RequestHeader = bytemuck::checked::try_pod_read_unaligned(&header_bytes)
        .map_err(|error| ReadError::Malformed(format!("bad request header: {error}")))?;
    if header.command != Command::Request {
        return Err(ReadError::Malformed(format!(
            "expected a Request frame, got {:?}",
            header.command
        )));
    }
    let size = header.size as usize;
    if !(HEADER_SIZE..=MAX_REQUEST_SIZE).contains(&size) {
        return Err(ReadError::Malformed(format!(
            "request size {size} out of range"
        )));
    }
    let mut body = BytesMut::zeroed(size - HEADER_SIZE);
    reader.read_exact(&mut body).await?;
    let code = match header.operation {
        Operation::Register => Code::Register,
        Operation::Logout => Code::Command(LOGOUT_USER_CODE),
        Operation::NonReplicated => {
            let at = NON_REPLICATED_CODE_OFFSET;
            let code = header.reserved[at..at + 4]
                .try_into()
                .map(u32::from_le_bytes)
                .map_err(|_| ReadError::Malformed("no command code".to_owned()))?;
            Code::Command(code)
        }
        operation => Code::Command(operation.to_command_code().ok_or_else(|| {
            ReadError::Malformed(format!("operation {operation:?} has no command"))
        })?),
    };
    Ok(Request {
        header,
        code,
        body: body.freeze(),
    })
}

/// How a successful reply body is laid out.
#[derive(Debug)]
pub(crate) enum ReplyBody {
    /// Sent as it is.
    Raw(Bytes),
    /// Preceded by an empty result section (`[u32 0]`), as metadata operations,
    /// logins and offset stores are.
    ResultFramed(Bytes),
}

/// Writes the reply to `request`: `result` is the body or the error code.
pub(crate) async fn write_reply(
    writer: &mut (impl AsyncWrite + Unpin),
    request: &RequestHeader,
    session: u64,
    result: Result<ReplyBody, ErrorCode>,
) -> std::io::Result<()> {
    let (status, prefix, body): (u32, &[u8], Bytes) = match result {
        Ok(ReplyBody::Raw(body)) => (0, &[], body),
        Ok(ReplyBody::ResultFramed(body)) => (0, &[0, 0, 0, 0], body),
        // An error always travels in the status with an empty body.
        Err(code) => (code, &[], Bytes::new()),
    };
    let size = HEADER_SIZE + prefix.len() + body.len();
    let header = ReplyHeader {
        command: Command::Reply,
        size: u32::try_from(size).map_err(|_| std::io::Error::other("reply too large"))?,
        request_checksum: request.request_checksum,
        client: request.client,
        request: request.request,
        operation: request.operation,
        op: session,
        status,
        ..ReplyHeader::default()
    };
    let mut frame = BytesMut::with_capacity(size);
    frame.extend_from_slice(bytemuck::bytes_of(&header));
    frame.extend_from_slice(prefix);
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: Operation, reserved_code: Option<u32>, body: &[u8]) -> Vec<u8> {
        let mut reserved = [0u8; 60];
        if let Some(code) = reserved_code {
            reserved[..4].copy_from_slice(&code.to_le_bytes());
        }
        let header = RequestHeader {
            command: Command::Request,
            operation,
            size: (HEADER_SIZE + body.len()) as u32,
            client: 7,
            request: 3,
            reserved,
            ..RequestHeader::default()
        };
        let mut frame = bytemuck::bytes_of(&header).to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[tokio::test]
    async fn command_codes_come_from_the_operation_or_the_reserved_bytes() {
        let frame = request(Operation::NonReplicated, Some(200), b"abc");
        let read = read_request(&mut frame.as_slice()).await.unwrap();
        assert_eq!(read.code, Code::Command(200));
        assert_eq!(&read.body[..], b"abc");

        let frame = request(Operation::CreateStream, None, b"");
        let read = read_request(&mut frame.as_slice()).await.unwrap();
        assert_eq!(read.code, Code::Command(202));

        let frame = request(Operation::Logout, None, b"");
        let read = read_request(&mut frame.as_slice()).await.unwrap();
        assert_eq!(read.code, Code::Command(LOGOUT_USER_CODE));

        let frame = request(Operation::Register, None, b"x");
        let read = read_request(&mut frame.as_slice()).await.unwrap();
        assert_eq!(read.code, Code::Register);
    }

    #[tokio::test]
    async fn replies_echo_the_request_and_frame_results() {
        let frame = request(Operation::CreateStream, None, b"");
        let read = read_request(&mut frame.as_slice()).await.unwrap();
        let mut out = Vec::new();
        let body = ReplyBody::ResultFramed(Bytes::from_static(b"payload"));
        write_reply(&mut out, &read.header, 9, Ok(body))
            .await
            .unwrap();
        let reply: ReplyHeader =
            bytemuck::checked::try_pod_read_unaligned(&out[..HEADER_SIZE]).unwrap();
        assert_eq!(reply.command, Command::Reply);
        assert_eq!(reply.size as usize, out.len());
        assert_eq!(reply.client, 7);
        assert_eq!(reply.request, 3);
        assert_eq!(reply.operation, Operation::CreateStream);
        assert_eq!(reply.op, 9);
        assert_eq!(reply.status, 0);
        assert_eq!(&out[HEADER_SIZE..], b"\0\0\0\0payload");

        let mut out = Vec::new();
        write_reply(&mut out, &read.header, 9, Err(1009))
            .await
            .unwrap();
        let reply: ReplyHeader =
            bytemuck::checked::try_pod_read_unaligned(&out[..HEADER_SIZE]).unwrap();
        assert_eq!(reply.status, 1009);
        assert_eq!(out.len(), HEADER_SIZE, "an error has an empty body");
    }

    #[tokio::test]
    async fn oversized_and_non_request_frames_are_refused() {
        let mut frame = request(Operation::NonReplicated, Some(1), b"");
        frame[48..52].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            read_request(&mut frame.as_slice()).await,
            Err(ReadError::Malformed(_))
        ));
        let mut frame = request(Operation::NonReplicated, Some(1), b"");
        frame[60] = Command::Reply as u8;
        assert!(matches!(
            read_request(&mut frame.as_slice()).await,
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read_request(&mut &b""[..]).await,
            Err(ReadError::Closed)
        ));
    }
}
