//! Peers that lie: another network's genesis, invalid gossiped headers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use blyan_chain::{BlockHeader, ChainId, GenesisSpec};
use futures::StreamExt as _;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identify, noise, tcp, yamux};

use crate::support::{config, entry_on, eventually, payload, start, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_of_another_genesis_is_refused_and_banned() {
    let a = start(Vec::new()).await;
    let other = GenesisSpec {
        covenant: std::borrow::Cow::Borrowed(b"another network's covenant"),
        ..GenesisSpec::shipped()
    };
    let stranger = start_with(&other, config(vec![a.tcp_address()]), |chain, key| {
        crate::support::append_entry(chain, key, &payload(9, 500));
    })
    .await;
    let stranger_peer = stranger.net.handle().local_peer();
    eventually("A refuses the stranger", || async {
        a.net.handle().peers().await.unwrap().iter().any(|info| {
            info.peer == stranger_peer && info.refused.is_some() && info.banned_for.is_some()
        })
    })
    .await;
    let info = a
        .net
        .handle()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.peer == stranger_peer)
        .unwrap();
    let reason = info.refused.unwrap();
    assert!(reason.contains("another network"), "{reason}");
    assert!(!info.connected || a.net.handle().connected().await.unwrap().is_empty());
    // Nothing of the stranger's chain came over.
    assert_eq!(a.chain.tip(ChainId::Dataset).height, 0);
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct RogueBehaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

/// A node that speaks gossipsub on the network's topic and nothing else honest.
async fn rogue(target: Multiaddr, topic: &IdentTopic) -> Swarm<RogueBehaviour> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(200))
                .build()
                .unwrap();
            RogueBehaviour {
                gossipsub: gossipsub::Behaviour::new(
                    MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .unwrap(),
                identify: identify::Behaviour::new(identify::Config::new(
                    blyan_p2p::protocol::PROTOCOL_VERSION.to_owned(),
                    key.public(),
                )),
            }
        })
        .unwrap()
        .build();
    swarm.behaviour_mut().gossipsub.subscribe(topic).unwrap();
    swarm.dial(target).unwrap();
    swarm
}

/// Drives `swarm` for `time`.
async fn drive(swarm: &mut Swarm<RogueBehaviour>, time: Duration) {
    let _ = tokio::time::timeout(time, async {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = swarm.select_next_some().await {}
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_gossiped_header_is_not_forwarded_and_costs_its_sender() {
    let b = start(Vec::new()).await;
    let c = start(vec![b.tcp_address()]).await;
    let genesis = b.chain.validator().genesis_hash(ChainId::Meta);
    let topic = IdentTopic::new(blyan_p2p::protocol::headers_topic(genesis));
    let mut rogue = rogue(b.tcp_address(), &topic).await;
    let rogue_peer = *rogue.local_peer_id();
    // Let the meshes form.
    drive(&mut rogue, Duration::from_secs(2)).await;

    // A well-signed header from the rogue is valid as a header: B accepts and forwards it.
    let key = blyan_chain::AuthorKey::generate();
    let good = entry_on(&b.chain, &key, &payload(1, 100));
    rogue
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), good.encode())
        .unwrap();
    let c_stats = c.net.handle().stats();
    let b_stats = b.net.handle().stats();
    for _ in 0..100 {
        drive(&mut rogue, Duration::from_millis(100)).await;
        if c_stats.headers_accepted.load(Ordering::Relaxed) >= 1 {
            break;
        }
    }
    assert_eq!(
        c_stats.headers_accepted.load(Ordering::Relaxed),
        1,
        "forwarded by B"
    );

    // The same header with its signature cut off is refused by B and goes no further.
    let mut forged: BlockHeader = entry_on(&b.chain, &key, &payload(2, 100));
    forged.signature = None;
    rogue
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), forged.encode())
        .unwrap();
    // Garbage that is no header at all.
    rogue
        .behaviour_mut()
        .gossipsub
        .publish(topic.clone(), b"not a header".to_vec())
        .unwrap_or_else(|_| gossipsub::MessageId::new(b"unsent"));
    for _ in 0..100 {
        drive(&mut rogue, Duration::from_millis(100)).await;
        if b_stats.headers_rejected.load(Ordering::Relaxed) >= 1 {
            break;
        }
    }
    drive(&mut rogue, Duration::from_secs(1)).await;
    assert!(b_stats.headers_rejected.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        c_stats.headers_rejected.load(Ordering::Relaxed),
        0,
        "never reached C"
    );
    let info = b
        .net
        .handle()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.peer == rogue_peer)
        .expect("B knows the rogue");
    assert!(info.invalid_headers >= 1);
    assert!(info.banned_for.is_some(), "the rogue is banned");
    // C holds nothing of the rogue's: B is not penalized by C.
    let b_at_c = c
        .net
        .handle()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.peer == b.net.handle().local_peer())
        .unwrap();
    assert_eq!(b_at_c.invalid_headers, 0);
    assert_eq!(b_at_c.offences, 0);
    eventually("the rogue is disconnected from B", || async {
        !b.net
            .handle()
            .connected()
            .await
            .unwrap()
            .contains(&rogue_peer)
    })
    .await;
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct LyingHolderBehaviour {
    payload: libp2p::request_response::Behaviour<blyan_p2p::protocol::PayloadCodec>,
    identify: identify::Behaviour,
}

/// A node that speaks only the payload protocol (its handler is the test's loop).
fn lying_holder() -> Swarm<LyingHolderBehaviour> {
    use blyan_p2p::protocol::{PAYLOAD_PROTOCOL, PayloadCodec};
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| LyingHolderBehaviour {
            payload: libp2p::request_response::Behaviour::with_codec(
                PayloadCodec,
                [(
                    PAYLOAD_PROTOCOL,
                    libp2p::request_response::ProtocolSupport::Full,
                )],
                libp2p::request_response::Config::default(),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                blyan_p2p::protocol::PROTOCOL_VERSION.to_owned(),
                key.public(),
            )),
        })
        .unwrap()
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_holder_sending_bad_ranges_is_caught_banned_and_the_payload_completes_elsewhere() {
    use blyan_p2p::protocol::PayloadResponse;
    use blyan_p2p::transfer::{Outboard, RangeResponse, respond};
    use libp2p::request_response;

    // Larger than the in-memory limit: fetched into a staging file from both holders at once.
    let data = payload(77, 12 * 1024 * 1024 + 123);
    assert!(data.len() as u64 > blyan_p2p::PAYLOAD_IN_MEMORY_BYTES_MAX);
    let stored = data.clone();
    let a = start_with(
        &GenesisSpec::shipped(),
        config(Vec::new()),
        move |chain, key| {
            crate::support::append_entry(chain, key, &stored);
        },
    )
    .await;
    let block = a.chain.tip(ChainId::Dataset).hash;
    let header = a.chain.header(&block).unwrap().unwrap();
    let outboard = Outboard::compute(header.payload_hash, &data).unwrap();

    let mut liar = lying_holder();
    liar.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let liar_address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = liar.select_next_some().await {
            break address;
        }
    };
    let liar_peer = *liar.local_peer_id();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let served_by_liar = std::sync::Arc::clone(&served);
    let lies = data.clone();
    let liar_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(LyingHolderBehaviourEvent::Payload(
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) = liar.select_next_some().await
            {
                let mut response = respond(&request.range, &lies, &outboard).unwrap();
                if let RangeResponse::Encoded(bytes) = &mut response {
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x40;
                }
                served_by_liar.fetch_add(1, Ordering::Relaxed);
                let _ = liar
                    .behaviour_mut()
                    .payload
                    .send_response(channel, PayloadResponse(response));
            }
        }
    });

    // C meets the liar first, then A: the payload's holders are both.
    let c = start(vec![
        liar_address.with(libp2p::multiaddr::Protocol::P2p(liar_peer)),
    ])
    .await;
    eventually("C connects to the liar", || async {
        c.net
            .handle()
            .connected()
            .await
            .unwrap()
            .contains(&liar_peer)
    })
    .await;
    c.net.handle().dial(a.tcp_address()).await.unwrap();
    eventually("C appends A's block", || async {
        c.chain.contains(&block).unwrap()
    })
    .await;
    assert_eq!(
        c.chain
            .payload_verified(&block)
            .unwrap()
            .unwrap()
            .as_slice(),
        &data[..]
    );
    assert!(served.load(Ordering::Relaxed) >= 1, "the liar was asked");
    let info = c
        .net
        .handle()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|info| info.peer == liar_peer)
        .unwrap();
    assert_eq!(
        info.bad_ranges, 1,
        "caught at its first bad range, then avoided"
    );
    assert!(info.banned_for.is_some());
    assert_eq!(c.net.handle().stats().bad_ranges.load(Ordering::Relaxed), 1);
    liar_task.abort();
}
