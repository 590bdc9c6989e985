//! Nodes that start apart reach the same chain: by sync on connect, by gossip afterwards, and
//! after a partition heals.

use blyan_chain::{ChainId, ChainStore};
use blyan_p2p::NetworkConfig;

use crate::support::{TestNode, append_entry, config, eventually, payload, start, start_with};

async fn same_tips(nodes: &[&TestNode]) -> bool {
    let first = nodes[0].tips();
    nodes.iter().all(|node| node.tips() == first)
}

fn same_blocks(a: &ChainStore, b: &ChainStore) {
    for chain in ChainId::ALL {
        let tip = a.tip(chain);
        assert_eq!(b.tip(chain), tip, "chain {chain}");
        let mut next = Some(tip.hash);
        while let Some(block) = next {
            let header = a.header(&block).unwrap().unwrap();
            assert_eq!(b.header(&block).unwrap().as_ref(), Some(&header));
            let ours = a.payload_verified(&block).unwrap().unwrap();
            let theirs = b.payload_verified(&block).unwrap().unwrap();
            assert_eq!(ours.as_slice(), theirs.as_slice(), "payload of {block}");
            next = header.prev_hash;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_bootstrapping_from_one_reach_its_tips_and_gossip_new_blocks() {
    let genesis = blyan_chain::GenesisSpec::shipped();
    let a = start_with(&genesis, config(Vec::new()), |chain, key| {
        for seed in 0..40 {
            // Sizes from empty to 3 MB: one request each, many blocks per ancestors page.
            let bytes = match seed % 4 {
                0 => 0,
                1 => 1000,
                2 => 70_000,
                _ => 3_000_000,
            };
            append_entry(chain, key, &payload(seed, bytes));
        }
    })
    .await;
    // B over QUIC, C over TCP.
    let b = start(vec![a.quic_address()]).await;
    let mut c = start(vec![a.tcp_address()]).await;
    eventually("B and C reach A's tips", || async {
        same_tips(&[&a, &b, &c]).await
    })
    .await;
    same_blocks(&a.chain, &b.chain);
    same_blocks(&a.chain, &c.chain);

    // A new block on A reaches both by gossip (the periodic sync is off in these configs).
    let fresh = append_entry(&a.chain, &a.key, &payload(1000, 5000));
    eventually("B and C receive A's new block", || async {
        b.chain.contains(&fresh).unwrap() && c.chain.contains(&fresh).unwrap()
    })
    .await;
    // C reports what it appended from peers, the fresh block among them.
    let mut reported = Vec::new();
    while let Ok(Some(appended)) =
        tokio::time::timeout(std::time::Duration::from_millis(200), c.net.next_appended()).await
    {
        reported.push(appended.block);
    }
    assert!(reported.contains(&fresh), "C reported {reported:?}");
    assert_eq!(reported.len(), 41, "40 by sync and 1 by gossip");

    // B and C find each other through A (Kademlia) and connect directly.
    let b_peer = b.net.handle().local_peer();
    eventually("C connects to B", || async {
        c.net.handle().connected().await.unwrap().contains(&b_peer)
    })
    .await;
    let peers = c.net.handle().peers().await.unwrap();
    let a_info = peers
        .iter()
        .find(|info| info.peer == a.net.handle().local_peer())
        .expect("C knows A");
    assert_eq!(
        a_info.address,
        Some(a.key.address()),
        "peer id names the chain key"
    );
    assert!(
        a_info.bytes_in > 40 * 1000,
        "C counted what it fetched from A"
    );
    assert!(
        c.net
            .handle()
            .stats()
            .blocks_synced
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 41
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_halves_that_appended_apart_converge_when_they_reconnect() {
    let a = start(Vec::new()).await;
    let b = start(Vec::new()).await;
    // Apart: each extends chain D from the same genesis differently (a fork at height 1).
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for seed in 0..5 {
        mine.push(append_entry(&a.chain, &a.key, &payload(seed, 2000)));
        theirs.push(append_entry(&b.chain, &b.key, &payload(100 + seed, 2000)));
    }
    for seed in 5..8 {
        mine.push(append_entry(&a.chain, &a.key, &payload(seed, 2000)));
    }
    assert_ne!(a.tips(), b.tips());
    // Heal.
    b.net.handle().dial(a.tcp_address()).await.unwrap();
    eventually("both halves hold every block", || async {
        mine.iter()
            .chain(&theirs)
            .all(|block| a.chain.contains(block).unwrap() && b.chain.contains(block).unwrap())
    })
    .await;
    eventually("both pick the same tips", || async {
        same_tips(&[&a, &b]).await
    })
    .await;
    // The fork rule made the longer branch the tip on both; the other branch is stored, not lost.
    assert_eq!(a.chain.tip(ChainId::Dataset).hash, *mine.last().unwrap());
    assert_eq!(b.chain.tip(ChainId::Dataset).hash, *mine.last().unwrap());
    same_blocks(&a.chain, &b.chain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_catches_up_on_blocks_appended_while_it_was_away() {
    let a = start(Vec::new()).await;
    let first = append_entry(&a.chain, &a.key, &payload(1, 100));
    let b = start(vec![a.tcp_address()]).await;
    eventually("B syncs the first block", || async {
        b.chain.contains(&first).unwrap()
    })
    .await;
    b.net.stop().await;
    let mut later = Vec::new();
    for seed in 2..6 {
        later.push(append_entry(&a.chain, &a.key, &payload(seed, 100)));
    }
    // B back with the same store; periodic sync on this time.
    let b2 = blyan_p2p::Network::start(
        NetworkConfig {
            sync_interval: std::time::Duration::from_millis(500),
            ..config(vec![a.tcp_address()])
        },
        &b.key,
        std::sync::Arc::clone(&b.chain),
    )
    .await
    .unwrap();
    eventually("B catches up", || async {
        later.iter().all(|block| b.chain.contains(block).unwrap())
    })
    .await;
    b2.stop().await;
}

#[tokio::test]
async fn a_download_abandoned_longer_than_the_limit_is_discarded_and_a_recent_one_kept() {
    let hour = std::time::Duration::from_secs(3600);
    let mut staged = Vec::new();
    let node = start_with(
        &blyan_chain::GenesisSpec::shipped(),
        NetworkConfig {
            stage_idle_max: hour,
            ..config(Vec::new())
        },
        |chain: &ChainStore, key| {
            // Two interrupted downloads left by an earlier run, one untouched for two hours.
            for seed in [1, 2] {
                let bytes = payload(seed, 2 * 1024 * 1024);
                let header = crate::support::entry_on(chain, key, &bytes);
                let stage = chain.stage_payload(&header).unwrap();
                stage.write_at(0, &bytes[..1024 * 1024]).unwrap();
                stage.flush().unwrap();
                staged.push(header.payload_hash);
            }
            let digits = staged[0].to_string();
            let part = chain
                .path()
                .join("staging")
                .join(format!("{}.part", digits.trim_start_matches("0x")));
            let sidecar = part.with_extension("blocks");
            for path in [part, sidecar] {
                std::fs::File::options()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_modified(std::time::SystemTime::now() - 2 * hour)
                    .unwrap();
            }
        },
    )
    .await;
    eventually("the abandoned download is discarded", || async {
        !node.chain.staged_payloads().unwrap().contains(&staged[0])
    })
    .await;
    assert_eq!(node.chain.staged_payloads().unwrap(), vec![staged[1]]);
}
