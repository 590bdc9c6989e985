//! One long-lived expert stream to one peer: calls are framed with ids and multiplexed, a
//! writer task sends frames in order, a reader task hands each answer to its caller. When the
//! stream breaks, every call in flight on it fails at once (the caller fails over).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::wire::{Answer, CallRequest, EXPERT_PROTOCOL, decode_answer, read_frame};

/// Frames queued for one stream's writer at most.
const FRAMES_QUEUED_MAX: usize = 256;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Answer, String>>>>>;

/// A frame to write: its header, then the shared data (sent to a second holder without a copy).
type Frame = (Vec<u8>, Arc<Vec<u8>>);

/// An open expert stream to one peer.
pub(crate) struct Link {
    frames: mpsc::Sender<Frame>,
    pending: Pending,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
}

fn fail_all(pending: &Pending, alive: &AtomicBool, reason: &str) {
    alive.store(false, Ordering::SeqCst);
    let drained: Vec<_> = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .collect();
    for (_, reply) in drained {
        let _ = reply.send(Err(reason.to_owned()));
    }
}

impl Link {
    /// Opens the stream (dialing the peer if needed) and starts its writer and reader.
    pub(crate) async fn open(
        control: &mut libp2p_stream::Control,
        peer: PeerId,
    ) -> Result<Arc<Self>, String> {
        let stream = control
            .open_stream(peer, EXPERT_PROTOCOL)
            .await
            .map_err(|error| error.to_string())?;
        let (mut reader, mut writer) = stream.split();
        let (frames, mut queued) = mpsc::channel::<Frame>(FRAMES_QUEUED_MAX);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        {
            let (pending, alive) = (Arc::clone(&pending), Arc::clone(&alive));
            tokio::spawn(async move {
                while let Some((head, data)) = queued.recv().await {
                    let written = async {
                        writer.write_all(&head).await?;
                        writer.write_all(&data).await?;
                        writer.flush().await
                    };
                    if let Err(error) = written.await {
                        tracing::debug!(%peer, %error, "expert stream write failed");
                        break;
                    }
                }
                fail_all(&pending, &alive, "the expert stream closed");
                let _ = writer.close().await;
            });
        }
        {
            let (pending, alive) = (Arc::clone(&pending), Arc::clone(&alive));
            tokio::spawn(async move {
                let reason = loop {
                    match read_frame(&mut reader).await {
                        Ok(Some(body)) => match decode_answer(&body) {
                            Ok((id, answer)) => {
                                let reply = pending
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .remove(&id);
                                if let Some(reply) = reply {
                                    let _ = reply.send(Ok(answer));
                                }
                            }
                            Err(error) => break error.to_string(),
                        },
                        Ok(None) => break "the holder closed the expert stream".to_owned(),
                        Err(error) => break format!("the expert stream failed: {error}"),
                    }
                };
                tracing::debug!(%peer, reason, "expert stream ended");
                fail_all(&pending, &alive, &reason);
            });
        }
        Ok(Arc::new(Self {
            frames,
            pending,
            next_id: AtomicU64::new(1),
            alive,
        }))
    }

    /// Whether the stream still works.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && !self.frames.is_closed()
    }

    /// Sends `request` (its id is assigned here) with `data` and waits for the answer. Dropping
    /// the future (a deadline) forgets the call.
    pub(crate) async fn call(
        &self,
        mut request: CallRequest,
        data: Arc<Vec<u8>>,
    ) -> Result<Answer, String> {
        request.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = request.id;
        let (reply, answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply);
        let forget = Forget {
            pending: &self.pending,
            id,
        };
        if !self.is_alive() {
            return Err("the expert stream is closed".into());
        }
        self.frames
            .send((request.head(), data))
            .await
            .map_err(|_| "the expert stream is closed".to_owned())?;
        let answer = answer
            .await
            .map_err(|_| "the expert stream closed".to_owned())?;
        drop(forget);
        answer
    }
}

/// Removes a call's pending entry when its caller stops waiting.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}
