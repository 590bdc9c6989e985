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
