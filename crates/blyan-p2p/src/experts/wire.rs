//! The expert-call protocol on one long-lived stream per peer: length-prefixed frames, each a
//! request or an answer carrying the id of its call, so many calls share the stream in flight.
//!
//! ```text
//! frame    = length: u32 LE (of the body) · body
//! request  = 0x01 · id: u64 · block: [u8; 32] · layer: u32 · expert: u32 · rows: u32 ·
//!            hidden: u32 · rows × hidden f32 LE
//! output   = 0x02 · id: u64 · rows: u32 · hidden: u32 · rows × hidden f32 LE
//! refusal  = 0x03 · id: u64 · code: u8 · reason: u32 length · UTF-8
//! ```
//! Hidden states travel as raw little-endian float32 bytes (no per-element encoding), and a
//! body is at most [`EXPERT_FRAME_BYTES_MAX`]: a bigger one is refused before it is read.

use blyan_chain::{BlockHash, ExpertName};
use futures::{AsyncRead, AsyncReadExt as _};

/// The stream protocol of expert calls.
pub const EXPERT_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/blyan/experts/1");
/// Largest frame body, in bytes: a prompt's rows for one expert (4096 rows of 4096 floats).
pub const EXPERT_FRAME_BYTES_MAX: u32 = 64 * 1024 * 1024 + 64;
/// Longest refusal reason sent, in bytes (longer ones are cut).
const REASON_BYTES_MAX: usize = 1024;

// The raw tensor bytes are the host's f32 bytes, sent as little-endian.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "the expert protocol sends host f32 bytes as little-endian"
);

const TAG_REQUEST: u8 = 1;
const TAG_OUTPUT: u8 = 2;
const TAG_REFUSAL: u8 = 3;
const REQUEST_HEAD_BYTES: usize = 1 + 8 + 32 + 4 * 4;
const OUTPUT_HEAD_BYTES: usize = 1 + 8 + 4 * 2;

/// Why a holder did not compute a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[non_exhaustive]
pub enum ExpertRefusal {
    /// The holder does not serve this expert block (another version, or not its experts).
    #[error("expert block {block} ({expert}) is not served here")]
    NotServed {
        /// The block asked for.
        block: String,
        /// The expert named.
        expert: String,
    },
    /// The input does not fit the expert (wrong hidden size, a malformed frame).
    #[error("bad input: {reason}")]
    BadInput {
        /// What is wrong.
        reason: String,
    },
    /// The holder failed to compute (its store, libtorch).
    #[error("the holder failed: {reason}")]
    Failed {
        /// What failed.
        reason: String,
    },
}

impl ExpertRefusal {
    fn code(&self) -> u8 {
        match self {
            Self::NotServed { .. } => 1,
            Self::BadInput { .. } => 2,
            Self::Failed { .. } => 3,
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::NotServed { block, expert } => format!("{expert} {block}"),
            Self::BadInput { reason } | Self::Failed { reason } => reason.clone(),
        }
    }

    fn from_wire(code: u8, reason: String) -> Self {
        match code {
            1 => {
                let (expert, block) = reason.split_once(' ').unwrap_or(("", reason.as_str()));
                Self::NotServed {
                    block: block.to_owned(),
                    expert: expert.to_owned(),
                }
            }
            2 => Self::BadInput { reason },
            _ => Self::Failed { reason },
        }
    }
}

/// One call: an expert block applied to `rows × hidden` float32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    /// The call's id on its stream.
    pub id: u64,
    /// The exact expert block to compute with.
    pub block: BlockHash,
    /// The expert the block is a version of.
    pub expert: ExpertName,
    /// Rows of the input.
    pub rows: u32,
    /// Values per row (the model's hidden size).
    pub hidden: u32,
}

impl CallRequest {
    /// The frame header of this request, to be followed by `data` (rows × hidden f32 LE).
    pub fn head(&self) -> Vec<u8> {
        let body = REQUEST_HEAD_BYTES as u64 + self.data_bytes();
        let mut head = Vec::with_capacity(4 + REQUEST_HEAD_BYTES);
        head.extend_from_slice(&(body as u32).to_le_bytes());
        head.push(TAG_REQUEST);
        head.extend_from_slice(&self.id.to_le_bytes());
        head.extend_from_slice(&self.block.0);
        head.extend_from_slice(&self.expert.layer().to_le_bytes());
        head.extend_from_slice(&self.expert.expert().to_le_bytes());
        head.extend_from_slice(&self.rows.to_le_bytes());
        head.extend_from_slice(&self.hidden.to_le_bytes());
        head
    }

    /// Bytes of the request's data.
    pub fn data_bytes(&self) -> u64 {
        u64::from(self.rows) * u64::from(self.hidden) * 4
    }

    /// Whether the whole frame fits [`EXPERT_FRAME_BYTES_MAX`].
    pub fn fits(&self) -> bool {
        REQUEST_HEAD_BYTES as u64 + self.data_bytes() <= u64::from(EXPERT_FRAME_BYTES_MAX)
    }
}

/// A holder's answer to one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The expert's output, `rows × hidden` f32 LE bytes.
    Output {
        /// Rows.
        rows: u32,
        /// Values per row.
        hidden: u32,
        /// The values.
        data: Vec<u8>,
    },
    /// The holder refused.
    Refused(ExpertRefusal),
}

/// An output frame: `(head, data)`, written one after the other.
pub fn output_frame(id: u64, rows: u32, hidden: u32, data: &[u8]) -> Vec<u8> {
    let body = OUTPUT_HEAD_BYTES + data.len();
    let mut frame = Vec::with_capacity(4 + body);
    frame.extend_from_slice(&(body as u32).to_le_bytes());
    frame.push(TAG_OUTPUT);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&rows.to_le_bytes());
    frame.extend_from_slice(&hidden.to_le_bytes());
    frame.extend_from_slice(data);
    frame
}

/// A refusal frame.
pub fn refusal_frame(id: u64, refusal: &ExpertRefusal) -> Vec<u8> {
    let mut reason = refusal.reason();
    if reason.len() > REASON_BYTES_MAX {
        let mut cut = REASON_BYTES_MAX;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    let body = 1 + 8 + 1 + 4 + reason.len();
    let mut frame = Vec::with_capacity(4 + body);
    frame.extend_from_slice(&(body as u32).to_le_bytes());
    frame.push(TAG_REFUSAL);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.push(refusal.code());
    frame.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    frame.extend_from_slice(reason.as_bytes());
    frame
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad expert frame: {0}")]
pub struct FrameError(pub String);

/// Reads one frame body; `Ok(None)` at a clean end of stream. A body over
/// [`EXPERT_FRAME_BYTES_MAX`] is an error before anything past its length is read.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(length);
    if length > EXPERT_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("an expert frame of {length} bytes (at most {EXPERT_FRAME_BYTES_MAX})"),
        ));
    }
    let mut body = vec![0u8; length as usize];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Reads fixed-size fields off the front of a body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < count {
            return Err(FrameError(format!(
                "{} bytes left, {count} needed",
                self.0.len()
            )));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let bytes: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| FrameError("u32".into()))?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| FrameError("u64".into()))?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// A request body: the request and its data (checked to be rows × hidden floats).
pub fn decode_request(body: &[u8]) -> Result<(CallRequest, &[u8]), FrameError> {
    let mut fields = Fields(body);
    if fields.take(1)? != [TAG_REQUEST] {
        return Err(FrameError("not a request".into()));
    }
    let id = fields.u64()?;
    let block: [u8; 32] = fields
        .take(32)?
        .try_into()
        .map_err(|_| FrameError("block hash".into()))?;
    let (layer, index) = (fields.u32()?, fields.u32()?);
    let expert = ExpertName::new(layer, index)
        .map_err(|error| FrameError(format!("expert {layer}.{index}: {error}")))?;
    let (rows, hidden) = (fields.u32()?, fields.u32()?);
    let request = CallRequest {
        id,
        block: BlockHash(block),
        expert,
        rows,
        hidden,
    };
    if fields.0.len() as u64 != request.data_bytes() {
        return Err(FrameError(format!(
            "{} data bytes for {rows} × {hidden} floats",
            fields.0.len()
        )));
    }
    Ok((request, fields.0))
}

/// An answer body: the call id and the answer.
pub fn decode_answer(body: &[u8]) -> Result<(u64, Answer), FrameError> {
    let mut fields = Fields(body);
    let tag = fields.take(1)?[0];
    let id = fields.u64()?;
    match tag {
        TAG_OUTPUT => {
            let (rows, hidden) = (fields.u32()?, fields.u32()?);
            if fields.0.len() as u64 != u64::from(rows) * u64::from(hidden) * 4 {
                return Err(FrameError(format!(
                    "{} data bytes for {rows} × {hidden} floats",
                    fields.0.len()
                )));
            }
            Ok((
                id,
                Answer::Output {
                    rows,
                    hidden,
                    data: fields.0.to_vec(),
                },
            ))
        }
        TAG_REFUSAL => {
            let code = fields.take(1)?[0];
            let length = fields.u32()? as usize;
            let reason = String::from_utf8_lossy(fields.take(length)?).into_owned();
            Ok((id, Answer::Refused(ExpertRefusal::from_wire(code, reason))))
        }
        other => Err(FrameError(format!("unknown answer tag {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> &[u8] {
        let length = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), 4 + length);
        &frame[4..]
    }

    #[test]
    fn a_request_round_trips() {
        let request = CallRequest {
            id: 7,
            block: BlockHash([9; 32]),
            expert: ExpertName::new(2, 5).unwrap(),
            rows: 2,
            hidden: 3,
        };
        let data: Vec<u8> = (0..24).collect();
        let mut frame = request.head();
        frame.extend_from_slice(&data);
        let (decoded, got) = decode_request(body(&frame)).unwrap();
        assert_eq!(decoded, request);
        assert_eq!(got, data.as_slice());
        // One byte short of the data is refused.
        assert!(decode_request(&body(&frame)[..frame.len() - 5]).is_err());
    }

    #[test]
    fn answers_round_trip() {
        let frame = output_frame(3, 1, 2, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            decode_answer(body(&frame)).unwrap(),
            (
                3,
                Answer::Output {
                    rows: 1,
                    hidden: 2,
                    data: vec![1, 2, 3, 4, 5, 6, 7, 8]
                }
            )
        );
        for refusal in [
            ExpertRefusal::NotServed {
                block: "ab".into(),
                expert: "layer0.expert1".into(),
            },
            ExpertRefusal::BadInput {
                reason: "hidden 3, expected 128".into(),
            },
            ExpertRefusal::Failed {
                reason: "store".into(),
            },
        ] {
            let frame = refusal_frame(4, &refusal);
            assert_eq!(
                decode_answer(body(&frame)).unwrap(),
                (4, Answer::Refused(refusal))
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_request_and_output_round_trip(
            id: u64,
            block: [u8; 32],
            layer in 0u32..64,
            index in 0u32..64,
            rows in 1u32..8,
            hidden in 1u32..8,
            seed: u8,
        ) {
            let request = CallRequest {
                id,
                block: BlockHash(block),
                expert: ExpertName::new(layer, index).unwrap(),
                rows,
                hidden,
            };
            let data: Vec<u8> = (0..request.data_bytes()).map(|i| (i as u8).wrapping_add(seed)).collect();
            let mut frame = request.head();
            frame.extend_from_slice(&data);
            let (decoded, got) = decode_request(body(&frame)).unwrap();
            proptest::prop_assert_eq!(&decoded, &request);
            proptest::prop_assert_eq!(got, data.as_slice());
            let frame = output_frame(id, rows, hidden, &data);
            proptest::prop_assert_eq!(
                decode_answer(body(&frame)).unwrap(),
                (id, Answer::Output { rows, hidden, data: data.clone() })
            );
        }
    }

    #[test]
    fn a_frame_past_the_limit_is_refused_before_it_is_read() {
        let mut bytes = (EXPERT_FRAME_BYTES_MAX + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut reader = futures::io::Cursor::new(bytes);
        let error = futures::executor::block_on(read_frame(&mut reader)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let mut at_limit = EXPERT_FRAME_BYTES_MAX.to_le_bytes().to_vec();
        at_limit.resize(4 + EXPERT_FRAME_BYTES_MAX as usize, 0);
        let mut reader = futures::io::Cursor::new(at_limit);
        let body = futures::executor::block_on(read_frame(&mut reader))
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), EXPERT_FRAME_BYTES_MAX as usize);
    }
}
