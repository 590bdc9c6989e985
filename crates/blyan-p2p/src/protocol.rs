//! The wire protocols between nodes, and their bincode codec for libp2p's request-response.
//!
//! - `/blyan/sync/1`: [`SyncRequest`] → [`SyncResponse`]: a node's status (genesis blocks and
//!   tips), headers by hash, and the ancestors of a block along its chain. Headers travel in
//!   their canonical encoding ([`blyan_chain::BlockHeader::encode`]); the receiver hashes them
//!   itself, so a peer cannot name a header by a false hash.
//! - `/blyan/payload/1`: [`PayloadRequest`] → [`PayloadResponse`]: byte ranges of a block's
//!   payload in blake3's verified-streaming encoding ([`crate::transfer`]), checked group by group
//!   as they are decoded.
//!
//! Every message has a size bound ([`SYNC_REQUEST_BYTES_MAX`] and friends); a message past it is
//! refused with an `InvalidData` error that says so, not truncated.

use std::io;
use std::marker::PhantomData;

use blyan_chain::BlockHash;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::StreamProtocol;

use crate::transfer::{RANGE_RESPONSE_BYTES_MAX, RangeRequest, RangeResponse};

/// The sync protocol's name.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/blyan/sync/1");
/// The payload protocol's name.
pub const PAYLOAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/blyan/payload/1");
/// The Kademlia protocol name of a Blyan network (not the public IPFS DHT's).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/blyan/kad/1");
/// Identify's protocol version: peers of another protocol version are not added to the DHT.
pub const PROTOCOL_VERSION: &str = "/blyan/1";

/// The gossip topic of block headers on the network whose meta-chain genesis is `genesis`.
pub fn headers_topic(genesis: BlockHash) -> String {
    format!("/blyan/{}/headers/1", &genesis.to_string()[..16])
}

/// The gossip topic of Proof-of-Learning records (chain D `PolProof` headers) on that network.
pub fn pol_topic(genesis: BlockHash) -> String {
    format!("/blyan/{}/pol/1", &genesis.to_string()[..16])
}

/// Headers one [`SyncResponse::Headers`] carries at most.
pub const HEADERS_PER_RESPONSE_MAX: u32 = 256;
/// Largest encoded sync request.
pub const SYNC_REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// Largest encoded sync response: a full page of headers with room to spare (a header is
/// ≤ 2 KiB with its metadata).
pub const SYNC_RESPONSE_BYTES_MAX: u64 = 2 * 1024 * 1024;
/// Largest encoded payload request.
pub const PAYLOAD_REQUEST_BYTES_MAX: u64 = 64 * 1024;
/// Largest payload response: a range response's encoded bytes.
pub const PAYLOAD_RESPONSE_BYTES_MAX: u64 = RANGE_RESPONSE_BYTES_MAX;

const _: () = assert!(
    HEADERS_PER_RESPONSE_MAX as u64 * 4096 < SYNC_RESPONSE_BYTES_MAX,
    "a full page of headers must fit one response"
);

/// What a node asks another about its chain.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum SyncRequest {
    /// The peer's genesis blocks and tips.
    Status,
    /// Headers of these blocks (at most [`HEADERS_PER_RESPONSE_MAX`]); unknown ones are left out.
    Headers {
        /// The blocks.
        blocks: Vec<BlockHash>,
    },
    /// `from` and its ancestors along its chain, newest first, at most `max` headers
    /// (capped at [`HEADERS_PER_RESPONSE_MAX`]).
    Ancestors {
        /// The newest block wanted.
        from: BlockHash,
        /// How many headers at most.
        max: u32,
    },
}

/// A chain's tip as a peer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct WireTip {
    /// The chain's letter (`A`, `B`, `D`).
    pub chain: u8,
    /// Height of the tip.
    pub height: u64,
    /// The tip block.
    pub hash: BlockHash,
}

/// A node's status: which network it is on (its genesis blocks) and how far it is.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct ChainStatus {
    /// The genesis block of each chain, in [`blyan_chain::ChainId::ALL`] order.
    pub genesis: Vec<BlockHash>,
    /// Each chain's tip by the fork rule.
    pub tips: Vec<WireTip>,
    /// Blocks the node holds.
    pub blocks: u64,
}

/// The genesis block of each chain of `chain`, in [`blyan_chain::ChainId::ALL`] order: what
/// [`ChainStatus::genesis`] carries and a peer's must equal.
pub(crate) fn genesis_hashes(chain: &blyan_chain::ChainStore) -> Vec<BlockHash> {
    let validator = chain.validator();
    blyan_chain::ChainId::ALL
        .iter()
        .map(|id| validator.genesis_hash(*id))
        .collect()
}

/// An answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum SyncResponse {
    /// Answer to [`SyncRequest::Status`].
    Status(ChainStatus),
    /// Encoded headers ([`blyan_chain::BlockHeader::encode`]), in the order asked.
    Headers(Vec<Vec<u8>>),
    /// The request was refused (over a limit, a store failure); the reason says which.
    Refused(String),
}

/// Byte ranges of one block's payload.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PayloadRequest {
    /// The block whose payload is asked for.
    pub block: BlockHash,
    /// The ranges, for the payload the block's header names.
    #[bincode(with_serde)]
    pub range: RangeRequest,
}

/// An answer to a [`PayloadRequest`]: the verified-streaming encoding of the ranges, or a typed
/// refusal (not held, another size, invalid ranges). On the wire ([`PayloadCodec`]) the encoded
/// bytes follow a one-byte tag and their length as they are: no serialization pass, one buffer
/// allocated to the announced length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadResponse(pub RangeResponse);

/// The payload protocol's codec: requests in bincode; a response of encoded ranges as tag 0, a
/// big-endian `u64` length and the bytes, read into one buffer of exactly that length; a refusal
/// as tag 1 and its bincode. Both bounded by [`PAYLOAD_REQUEST_BYTES_MAX`] and
/// [`PAYLOAD_RESPONSE_BYTES_MAX`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PayloadCodec;

const PAYLOAD_ENCODED_TAG: u8 = 0;
const PAYLOAD_REFUSAL_TAG: u8 = 1;

impl libp2p::request_response::Codec for PayloadCodec {
    type Protocol = StreamProtocol;
    type Request = PayloadRequest;
    type Response = PayloadResponse;

    async fn read_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<PayloadRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, PAYLOAD_REQUEST_BYTES_MAX, "payload request").await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<PayloadResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        match tag[0] {
            PAYLOAD_ENCODED_TAG => {
                let mut length = [0u8; 8];
                io.read_exact(&mut length).await?;
                let length = u64::from_be_bytes(length);
                if length > PAYLOAD_RESPONSE_BYTES_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "payload response of {length} bytes exceeds {PAYLOAD_RESPONSE_BYTES_MAX}"
                        ),
                    ));
                }
                let mut bytes = vec![0u8; length as usize];
                io.read_exact(&mut bytes).await?;
                let mut rest = [0u8; 1];
                if io.read(&mut rest).await? != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "payload response: bytes after the announced length",
                    ));
                }
                Ok(PayloadResponse(RangeResponse::Encoded(bytes)))
            }
            PAYLOAD_REFUSAL_TAG => {
                let bincode::serde::Compat(response) =
                    read_bounded(io, SYNC_REQUEST_BYTES_MAX, "payload refusal").await?;
                Ok(PayloadResponse(response))
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("payload response: unknown tag {other}"),
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: PayloadRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &request, PAYLOAD_REQUEST_BYTES_MAX, "payload request").await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: PayloadResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match response.0 {
            RangeResponse::Encoded(bytes) => {
                if bytes.len() as u64 > PAYLOAD_RESPONSE_BYTES_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "payload response of {} bytes exceeds {PAYLOAD_RESPONSE_BYTES_MAX}",
                            bytes.len()
                        ),
                    ));
                }
                let mut head = [0u8; 9];
                head[0] = PAYLOAD_ENCODED_TAG;
                head[1..].copy_from_slice(&(bytes.len() as u64).to_be_bytes());
                io.write_all(&head).await?;
                io.write_all(&bytes).await?;
                io.close().await
            }
            refusal => {
                io.write_all(&[PAYLOAD_REFUSAL_TAG]).await?;
                write_bounded(
                    io,
                    &bincode::serde::Compat(refusal),
                    SYNC_REQUEST_BYTES_MAX,
                    "payload refusal",
                )
                .await
            }
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
}

/// A request-response codec writing one bincode value per stream, bounded in both directions.
pub struct BincodeCodec<Req, Resp> {
    request_bytes_max: u64,
    response_bytes_max: u64,
    phantom: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> BincodeCodec<Req, Resp> {
    /// A codec refusing requests over `request_bytes_max` and responses over
    /// `response_bytes_max`.
    pub fn new(request_bytes_max: u64, response_bytes_max: u64) -> Self {
        Self {
            request_bytes_max,
            response_bytes_max,
            phantom: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for BincodeCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::new(self.request_bytes_max, self.response_bytes_max)
    }
}

async fn read_bounded<T, V>(io: &mut T, max: u64, what: &str) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: bincode::Decode<()>,
{
    let mut bytes = Vec::new();
    io.take(max + 1).read_to_end(&mut bytes).await?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} exceeds {max} bytes"),
        ));
    }
    let (value, read) = bincode::decode_from_slice(&bytes, config())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}")))?;
    if read != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}: {} trailing bytes", bytes.len() - read),
        ));
    }
    Ok(value)
}

async fn write_bounded<T, V>(io: &mut T, value: &V, max: u64, what: &str) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: bincode::Encode,
{
    let bytes = bincode::encode_to_vec(value, config())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {error}")))?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} of {} bytes exceeds {max}", bytes.len()),
        ));
    }
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Resp> libp2p::request_response::Codec for BincodeCodec<Req, Resp>
where
    Req: bincode::Encode + bincode::Decode<()> + Send + Sync + 'static,
    Resp: bincode::Encode + bincode::Decode<()> + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.request_bytes_max, "request").await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_bounded(io, self.response_bytes_max, "response").await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &req, self.request_bytes_max, "request").await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bounded(io, &res, self.response_bytes_max, "response").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let request = SyncRequest::Ancestors {
            from: BlockHash([7; 32]),
            max: 12,
        };
        let bytes = bincode::encode_to_vec(&request, config()).expect("encodes");
        let (back, _): (SyncRequest, usize) =
            bincode::decode_from_slice(&bytes, config()).expect("decodes");
        assert_eq!(back, request);
    }

    async fn payload_round_trip(response: PayloadResponse) -> PayloadResponse {
        use libp2p::request_response::Codec as _;
        let mut wire = Vec::new();
        PayloadCodec
            .write_response(
                &PAYLOAD_PROTOCOL,
                &mut futures::io::Cursor::new(&mut wire),
                response,
            )
            .await
            .expect("writes");
        PayloadCodec
            .read_response(&PAYLOAD_PROTOCOL, &mut futures::io::Cursor::new(wire))
            .await
            .expect("reads")
    }

    #[tokio::test]
    async fn payload_responses_round_trip_as_raw_bytes_and_typed_refusals() {
        let encoded = PayloadResponse(RangeResponse::Encoded(
            (0..=255u8).cycle().take(70_000).collect(),
        ));
        assert_eq!(payload_round_trip(encoded.clone()).await, encoded);
        let refused = PayloadResponse(RangeResponse::not_held());
        assert_eq!(payload_round_trip(refused.clone()).await, refused);
    }

    #[tokio::test]
    async fn a_payload_response_announcing_too_many_bytes_is_refused_before_reading_them() {
        use libp2p::request_response::Codec as _;
        let mut wire = vec![PAYLOAD_ENCODED_TAG];
        wire.extend_from_slice(&(PAYLOAD_RESPONSE_BYTES_MAX + 1).to_be_bytes());
        let error = PayloadCodec
            .read_response(&PAYLOAD_PROTOCOL, &mut futures::io::Cursor::new(wire))
            .await
            .expect_err("over the bound");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let error = PayloadCodec
            .read_response(&PAYLOAD_PROTOCOL, &mut futures::io::Cursor::new(vec![7]))
            .await
            .expect_err("unknown tag");
        assert!(error.to_string().contains("unknown tag 7"), "{error}");
    }

    #[tokio::test]
    async fn a_message_over_its_bound_is_refused_not_truncated() {
        let response = SyncResponse::Headers(vec![vec![1; 100]]);
        let mut wire = Vec::new();
        write_bounded(
            &mut futures::io::Cursor::new(&mut wire),
            &response,
            1000,
            "response",
        )
        .await
        .expect("fits");
        let error = read_bounded::<_, SyncResponse>(
            &mut futures::io::Cursor::new(wire.clone()),
            50,
            "response",
        )
        .await
        .expect_err("over the bound");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("exceeds 50 bytes"), "{error}");
        let back: SyncResponse =
            read_bounded(&mut futures::io::Cursor::new(wire), 1000, "response")
                .await
                .expect("within the bound");
        assert_eq!(back, response);
        let error = write_bounded(
            &mut futures::io::Cursor::new(Vec::new()),
            &response,
            10,
            "response",
        )
        .await
        .expect_err("over the bound");
        assert!(error.to_string().contains("exceeds 10"), "{error}");
    }
}
