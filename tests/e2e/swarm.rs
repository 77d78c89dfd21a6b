//! The swarm engine on loopback: real sockets on 127.0.0.1, real bytes, every wait bounded.
//!
//! In-process tests drive `vmt_swarm::Engine` directly (several engines in one runtime, as
//! rqbit's e2e tests do); the CLI tests at the end run the real `vmt-run seed` / `fetch`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vmt_swarm::{EngineConfig, Storage, Torrent};
use vmt_tests::{
    content, dialing, free_port, shutdown_all, within, CliSeeder, Proc, TestImage, MIB, PIECE,
};

/// One seeder, three clients that do not upload: every byte comes from the seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_server_all_bytes_from_seeder() {
    let img = TestImage::new(64 * MIB, 1).await;
    let seed = img.seeder(EngineConfig::default()).await;
    // Clients also know each other, so "no upload" is what keeps bytes off client links.
    let names = ["a", "b", "c"];
    let config = EngineConfig {
        upload: false,
        ..dialing(&[&seed])
    };
    let clients = img.meshed_clients(&names, config).await;
    for (c, name) in clients.iter().zip(names) {
        img.finish_download(c, name).await;
        let st = c.stats();
        assert_eq!(
            st.downloaded_except(&seed.peer_id()),
            0,
            "{name} got bytes from a client"
        );
        assert_eq!(st.uploaded, 0, "{name} uploaded in client-server mode");
        assert_eq!(st.hash_failures, 0);
    }
    assert!(seed.stats().uploaded >= 3 * img.data.len() as u64);
    shutdown_all(&[&seed]).await;
}

/// Swarm mode with a slow seeder: clients trade pieces among themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_clients_exchange_pieces() {
    let img = TestImage::new(64 * MIB, 2).await;
    // 64 MiB to three clients at 24 MiB/s takes 8 s from the seeder alone; sharing is the only
    // way the clients finish with less from it, and some sharing is certain since every client
    // holds pieces the others lack while the seeder is busy.
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(24 * MIB as u64),
            ..Default::default()
        })
        .await;
    let names = ["a", "b", "c"];
    let clients = img.meshed_clients(&names, dialing(&[&seed])).await;
    for (c, name) in clients.iter().zip(names) {
        img.finish_download(c, name).await;
    }
    let from_clients: u64 = clients
        .iter()
        .map(|c| c.stats().downloaded_except(&seed.peer_id()))
        .sum();
    let uploaded_by_clients: u64 = clients.iter().map(|c| c.stats().uploaded).sum();
    eprintln!(
        "swarm: {from_clients} bytes moved between clients, {uploaded_by_clients} uploaded by them"
    );
    assert!(from_clients > 0, "no client got a byte from another client");
    assert!(uploaded_by_clients > 0);
    shutdown_all(&[&seed]).await;
}

/// An injecting seeder (`--inject`) puts each piece into the crowd about once: sharing
/// clients that plan the whole image are declined pieces another holds and trade them, a
/// client that does not upload is never declined, and every copy is the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injecting_seeder_sends_each_piece_about_once() {
    let img = TestImage::new(16 * MIB, 12).await;
    // 8 MiB/s: the seeder is the bottleneck, so the clients ask it for overlapping pieces.
    let seed = img
        .seeder(EngineConfig {
            inject: true,
            upload_limit: Some(8 * MIB as u64),
            upload_slots: 8,
            ..Default::default()
        })
        .await;
    let names = ["a", "b", "c"];
    let clients = img.meshed_clients(&names, EngineConfig::default()).await;
    // An injecting seeder serves sharing clients only what they read or plan to read: plan
    // the whole image, then dial it.
    let plan: Vec<u32> = (0..clients[0].layout().blocks()).collect();
    for c in &clients {
        c.set_plan(&plan);
        c.add_peer(seed.listen_addr().unwrap());
    }
    let lone = img
        .client(
            "lone",
            EngineConfig {
                upload: false,
                ..dialing(&[&seed])
            },
        )
        .await;
    let stats: Vec<_> = {
        for (c, name) in clients.iter().zip(names) {
            within(
                &format!("{name}'s download"),
                vmt_tests::swarm::DOWNLOAD_LIMIT,
                c.wait_complete(),
            )
            .await
            .expect("the download completes");
        }
        clients.iter().map(|c| c.stats()).collect()
    };
    img.finish_download(&lone, "lone").await;
    let image = img.data.len() as u64;
    let from_seeder: u64 = stats
        .iter()
        .map(|s| s.downloaded - s.downloaded_except(&seed.peer_id()))
        .sum();
    let declines: u64 = stats.iter().map(|s| s.declines_received).sum();
    let ls = lone.stats();
    let st = seed.stats();
    eprintln!(
        "inject: the sharing clients got {from_seeder} bytes from the seeder ({:.2} images), \
         {declines} declines; the seeder declined {} requests",
        from_seeder as f64 / image as f64,
        st.declined_requests
    );
    assert!(
        declines > 0 && st.declined_requests > 0,
        "nothing was declined"
    );
    // Each piece once, plus what a lapsed reservation or a peer's second ask lets through.
    assert!(
        from_seeder < image * 3 / 2,
        "the seeder sent the sharing clients {from_seeder} bytes of a {image}-byte image"
    );
    assert_eq!(
        ls.declines_received, 0,
        "a client that does not upload is never declined"
    );
    shutdown_all(&clients.iter().collect::<Vec<_>>()).await;
    for name in names {
        img.assert_client_has_image(name);
    }
    shutdown_all(&[&seed]).await;
}

/// A client that reads on demand, asks urgently while choked, and shares nothing.
fn urgent_reader(peers: &[&vmt_swarm::Engine]) -> EngineConfig {
    EngineConfig {
        upload: false,
        fetch_all: false,
        urgent: true,
        ..dialing(peers)
    }
}

/// A read waits for no choke rotation (`vmt_urgent`): the seeder's one upload slot is taken
/// by a client fetching the whole image, and rotates once a minute, yet the piece another
/// client's reader demands arrives at once, served while that client stays choked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choked_client_gets_what_its_reader_waits_for_without_a_rotation() {
    let img = TestImage::new(32 * MIB, 13).await;
    // 2 MiB/s: the hog takes 16 s for the image and keeps the slot all that time.
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(2 * MIB as u64),
            upload_slots: 1,
            rechoke_interval: Duration::from_secs(60),
            urgent: true,
            ..Default::default()
        })
        .await;
    // It does not upload: the reader learns of it over PEX, and must not get the piece there.
    let hog = img.hog(&[&seed]).await;
    let reader = img.client("reader", urgent_reader(&[&seed])).await;
    // The hog fetches in rarest-first order from a rotation start: the image's last piece is
    // as likely as any to be missing there.
    let last = img.torrent.piece(img.torrent.piece_count() - 1).unwrap();
    let t0 = std::time::Instant::now();
    assert!(reader.demand(last));
    within(
        "the demanded piece",
        Duration::from_secs(10),
        reader.wait_piece(last),
    )
    .await
    .expect("the piece arrives");
    let waited = t0.elapsed();
    let (rs, ss) = (reader.stats(), seed.stats());
    eprintln!(
        "urgent: the demanded piece came in {waited:?}; the reader asked {} urgent requests, \
         the seeder served {} of them while choking it",
        rs.urgent_asked, ss.urgent_served
    );
    assert!(rs.urgent_asked > 0, "the reader never asked while choked");
    assert!(
        ss.urgent_served > 0,
        "the seeder served nothing while choking"
    );
    assert!(
        !hog.is_complete(),
        "the hog gave its slot up: the test proves nothing"
    );
    img.assert_piece(&reader, last);
    shutdown_all(&[&reader, &hog, &seed]).await;
}

/// A holder with a long backlog of urgent uploads answers one more busy (`vmt_busy`) instead
/// of queuing it, and the asker gets the block from another holder at once, with both still
/// choking it (their one upload slot taken by a hog, rotated once a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_holder_sends_the_reader_to_another() {
    let img = TestImage::new(32 * MIB, 19).await;
    let holder = |busy_backlog| EngineConfig {
        upload_limit: Some(MIB as u64),
        upload_slots: 1,
        rechoke_interval: Duration::from_secs(60),
        urgent: true,
        busy_backlog,
        ..Default::default()
    };
    // `busy` answers every urgent request busy; `free` has the default backlog.
    let busy = img.seeder(holder(0)).await;
    let free = img
        .seeder(holder(vmt_swarm::EngineConfig::default().busy_backlog))
        .await;
    let hog = img.hog(&[&busy, &free]).await;
    let reader = img
        .client(
            "reader",
            EngineConfig {
                pex: false,
                ..urgent_reader(&[&busy])
            },
        )
        .await;
    let last = img.torrent.piece(img.torrent.piece_count() - 1).unwrap();
    assert!(reader.demand(last));
    within("a busy answer", Duration::from_secs(10), async {
        while reader.stats().busy_received == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    reader.add_peer(free.listen_addr().expect("it listens"));
    within(
        "the demanded piece, from the other holder",
        Duration::from_secs(10),
        reader.wait_piece(last),
    )
    .await
    .expect("the piece arrives");
    let (bs, fs) = (busy.stats(), free.stats());
    assert!(bs.busy_sent > 0, "the busy holder never said so");
    assert_eq!(
        bs.urgent_served, 0,
        "the busy holder queued an urgent request"
    );
    assert!(
        fs.urgent_served > 0,
        "the free holder served nothing urgently"
    );
    assert!(
        !hog.is_complete(),
        "the hog gave its slots up: the test proves nothing"
    );
    img.assert_piece(&reader, last);
    shutdown_all(&[&reader, &hog, &busy, &free]).await;
}

/// A block verified alone is served before its piece is whole (`vmt_have_block`): a client
/// that fetched one block a reader waited for gives it to a peer whose reader waits for the
/// same block, with the seeder gone and the piece still partial at both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_verified_alone_is_served_before_its_piece_is_whole() {
    let img = TestImage::new(4 * MIB, 17).await;
    let seed = img
        .seeder(EngineConfig {
            urgent: true,
            ..Default::default()
        })
        .await;
    let demand_only = |peers: &[&vmt_swarm::Engine]| EngineConfig {
        fetch_all: false,
        urgent: true,
        pex: false,
        ..dialing(peers)
    };
    let first = img.client("first", demand_only(&[&seed])).await;
    // A block in the middle of piece 5, whose other blocks nobody asks for.
    let piece = 5;
    let block = first.layout().piece_blocks(piece).start + 3;
    first.demand_blocks(block..block + 1);
    within("the first reader's block", Duration::from_secs(20), async {
        while !first.has_block(block) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shutdown_all(&[&seed]).await;
    let p = img.torrent.piece(piece).unwrap();
    assert!(
        !first.has_piece(p),
        "the piece must stay partial: the test proves nothing"
    );
    let second = img.client("second", demand_only(&[&first])).await;
    second.demand_blocks(block..block + 1);
    within(
        "the second reader's block, from a partial piece",
        Duration::from_secs(20),
        async {
            while !second.has_block(block) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    let bl = second.layout().block_len() as usize;
    let mut buf = vec![0u8; bl];
    let at = block as usize * bl;
    second.read_at(at as u64, &mut buf).expect("read the block");
    assert!(
        buf == img.data[at..at + bl],
        "the block's bytes differ from the image's"
    );
    assert!(
        !first.has_piece(p) && !second.has_piece(p),
        "only the one block moved"
    );
    assert_eq!(
        first.stats().uploaded,
        bl as u64,
        "the first sent the block, once"
    );
    shutdown_all(&[&second, &first]).await;
}

/// A demanded piece arrives long before the plan would reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_overtakes_plan() {
    let img = TestImage::new(16 * MIB, 3).await;
    let torrent = &img.torrent;
    let n = torrent.piece_count();
    // 4 MiB/s: the plan takes 4 s, so the demand lands while most of it is pending.
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(4 * MIB as u64),
            ..Default::default()
        })
        .await;
    // Plan and subscription are in place before the first peer is dialed, so every piece is
    // fetched by the plan and seen arriving.
    let c = img.client("c", EngineConfig::default()).await;
    let plan: Vec<u32> = (0..c.layout().blocks()).collect();
    c.set_plan(&plan);
    let mut events = c.subscribe();
    c.add_peer(seed.listen_addr().unwrap());
    let mut order = Vec::new();
    // Wait for a few plan pieces, then demand the plan's last piece.
    while order.len() < 4 {
        order.push(
            within("plan pieces", Duration::from_secs(60), events.recv())
                .await
                .unwrap(),
        );
    }
    let last = torrent.piece(n - 1).unwrap();
    assert!(c.demand(last));
    // Counted after the call: every piece verified before the demand took effect is included,
    // however late this task runs.
    let at_demand = c.stats().pieces.have as usize;
    while order.len() < n as usize {
        order.push(
            within("all pieces", Duration::from_secs(60), events.recv())
                .await
                .unwrap(),
        );
    }
    let arrived = order.iter().position(|&p| p == n - 1).unwrap();
    eprintln!(
        "demand: piece {} demanded after {at_demand} arrivals, arrived {arrived}th",
        n - 1
    );
    // In plan order it would be the last. Only pieces partly received when the demand came may
    // land before it (the rest of the pipeline is cancelled): the request window keeps a few
    // blocks queued on loopback, parts of at most 3 pieces of 256 KiB.
    assert!(
        arrived <= at_demand + 3,
        "demanded piece arrived {arrived}th, demand made after {at_demand} pieces: {order:?}"
    );
    // Before the demand the plan was followed from its start.
    assert!(
        order[..at_demand.min(order.len())].iter().all(|&p| p < 8),
        "plan not followed: {order:?}"
    );
    // The rest of the plan kept its order, except pieces cancelled for the demand and
    // re-requested after it.
    let rest: Vec<u32> = order.iter().copied().filter(|&p| p != n - 1).collect();
    assert!(
        rest.windows(2).filter(|w| w[0] > w[1]).count() <= 2,
        "plan order broken: {rest:?}"
    );
    shutdown_all(&[&c]).await;
    img.assert_client_has_image("c");
    shutdown_all(&[&seed]).await;
}

/// What a liar says after the handshake: it has every piece, and it unchokes.
pub(crate) fn liar_opening(torrent: &Torrent) -> Vec<u8> {
    use peer_binary_protocol::extended::PeerExtendedMessageIds;
    use peer_binary_protocol::Message;
    let bitfield_len = torrent.lengths().piece_bitfield_bytes();
    let mut bits = vec![0xffu8; bitfield_len];
    // Spare bits at the end must be clear.
    *bits.last_mut().unwrap() = 0xff << (bitfield_len as u32 * 8 - torrent.piece_count());
    let ext = || PeerExtendedMessageIds {
        ut_metadata: None,
        ut_pex: None,
    };
    let mut out = vec![0u8; bitfield_len + 64];
    let mut k = Message::Bitfield(librqbit::ByteBuf(&bits))
        .serialize(&mut out, &ext)
        .unwrap();
    k += Message::Unchoke.serialize(&mut out[k..], &ext).unwrap();
    out.truncate(k);
    out
}

/// A peer that claims every piece and serves garbage. It listens on 127.0.0.2: strikes and
/// bans are per address, and the honest peers of a test are on 127.0.0.1.
pub(crate) async fn malicious_peer(
    torrent: &Torrent,
) -> (SocketAddr, tokio::task::JoinHandle<u64>) {
    use peer_binary_protocol::extended::PeerExtendedMessageIds;
    use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, Piece};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let info_hash = torrent.info_hash();
    let opening = liar_opening(torrent);
    let task = tokio::spawn(async move {
        let mut served = 0u64;
        let ext = || PeerExtendedMessageIds {
            ut_metadata: None,
            ut_pex: None,
        };
        // Serve connections until the victim bans us (it then stops dialing).
        while let Ok(Ok((mut s, _))) =
            tokio::time::timeout(Duration::from_secs(5), listener.accept()).await
        {
            let mut hs = [0u8; 68];
            let id = librqbit_core::hash_id::Id20::new(*b"-EVIL00-abcdefghijkl");
            let len = Handshake::new(info_hash, id).serialize_unchecked_len(&mut hs);
            if s.write_all(&hs[..len]).await.is_err() || s.read_exact(&mut hs).await.is_err() {
                continue;
            }
            if s.write_all(&opening).await.is_err() {
                continue;
            }
            let mut out = vec![0u8; 64 * 1024];
            let mut buf = vec![0u8; 1 << 20];
            let (mut start, mut end) = (0, 0);
            let garbage = vec![0x5au8; 16384];
            'conn: loop {
                match s.read(&mut buf[end..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(r) => end += r,
                }
                loop {
                    match Message::deserialize(&buf[start..end], &[]) {
                        Ok((Message::Request(r), used)) => {
                            start += used;
                            let data = &garbage[..r.length as usize];
                            let m = Message::Piece(Piece::from_data(r.index, r.begin, data));
                            let k = m.serialize(&mut out, &ext).unwrap();
                            if s.write_all(&out[..k]).await.is_err() {
                                break 'conn;
                            }
                            served += r.length as u64;
                        }
                        Ok((_, used)) => start += used,
                        Err(MessageDeserializeError::NotEnoughData(..)) => break,
                        Err(_) => break 'conn,
                    }
                }
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
        }
        served
    });
    (addr, task)
}

/// Corrupt data is caught by the SHA-1 check, never stored, the peer is banned, and the
/// download completes from the honest seeder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_peer_is_detected_and_banned() {
    let img = TestImage::new(8 * MIB, 4).await;
    let (torrent, data) = (&img.torrent, &img.data);
    // A slow seeder leaves the liar plenty of pieces to be asked for.
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(2 * MIB as u64),
            ..Default::default()
        })
        .await;
    let (evil, evil_task) = malicious_peer(torrent).await;
    let c = img.client("c", EngineConfig::default()).await;
    // Watch every verified piece as it lands: its bytes on disk must already be the right ones.
    // Subscribed before any peer is dialed, so no piece goes unseen.
    let mut events = c.subscribe();
    c.add_peer(evil);
    c.add_peer(seed.listen_addr().unwrap());
    let mut checked = 0;
    let mut buf = vec![0u8; PIECE as usize];
    while checked < torrent.piece_count() {
        let p = within("verified pieces", Duration::from_secs(60), events.recv())
            .await
            .unwrap();
        let off = p as usize * PIECE as usize;
        let len = c.read_at(off as u64, &mut buf).unwrap();
        assert!(
            buf[..len] == data[off..off + len],
            "piece {p} was stored with wrong bytes"
        );
        checked += 1;
    }
    let st = c.stats();
    eprintln!(
        "corrupt: {} hash failures, {} wasted bytes",
        st.hash_failures, st.wasted
    );
    assert!(st.hash_failures >= 1, "the corrupt pieces were not noticed");
    let liar = st
        .peers
        .iter()
        .find(|p| &p.peer_id == b"-EVIL00-abcdefghijkl")
        .unwrap();
    assert!(liar.banned, "the corrupt peer was not banned");
    assert_eq!(liar.hash_failures, vmt_swarm::MAX_STRIKES);
    shutdown_all(&[&c]).await;
    img.assert_client_has_image("c");
    // The seeder goes first: it may have learned the liar from the client through PEX (BEP 11)
    // and keep a connection to it open, which a liar serving until its last peer leaves waits
    // for.
    shutdown_all(&[&seed]).await;
    assert!(
        within("liar ends", Duration::from_secs(30), evil_task)
            .await
            .unwrap()
            > 0
    );
}

/// Issue 11: a peer that sends corrupt blocks a reader waits for. Each is thrown away before
/// it is readable and counts a strike (two ban the peer); the blocks then come from the honest
/// seeder, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r11_a_corrupt_block_is_refused_and_its_sender_struck() {
    let img = TestImage::new(8 * MIB, 6).await;
    assert!(img.torrent.block_hashes().is_some());
    let seed = img.seeder(EngineConfig::default()).await;
    let (evil, evil_task) = malicious_peer(&img.torrent).await;
    // Demand only: nothing but the demanded blocks is fetched.
    let c = img
        .client(
            "c",
            EngineConfig {
                fetch_all: false,
                ..Default::default()
            },
        )
        .await;
    let wanted = 5 * 16 + 3..5 * 16 + 6;
    c.add_peer(evil);
    c.demand_blocks(wanted.clone());
    within("a corrupt block", Duration::from_secs(30), async {
        while c.stats().hash_failures == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        wanted.clone().all(|b| !c.has_block(b)),
        "no corrupt block was made readable"
    );
    c.add_peer(seed.listen_addr().unwrap());
    within("the demanded blocks", Duration::from_secs(30), async {
        while !wanted.clone().all(|b| c.has_block(b)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let at = wanted.start as usize * 16384;
    let mut buf = vec![0u8; wanted.len() * 16384];
    c.read_at(at as u64, &mut buf).unwrap();
    assert!(
        buf == img.data[at..at + buf.len()],
        "the reader gets the image's bytes"
    );
    let st = c.stats();
    let liar = st
        .peers
        .iter()
        .find(|p| &p.peer_id == b"-EVIL00-abcdefghijkl")
        .unwrap();
    assert!(liar.hash_failures >= 1, "the sender got a strike");
    assert!(
        liar.banned == (liar.hash_failures >= vmt_swarm::MAX_STRIKES),
        "banned exactly at {} strikes: {liar:?}",
        vmt_swarm::MAX_STRIKES
    );
    assert_eq!(st.pieces.have, 0, "demand fetched blocks, not pieces");
    shutdown_all(&[&c, &seed]).await;
    evil_task.abort();
}

/// Stop a client mid-download and start it again: it resumes from its bitmap and fetches only
/// what it did not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_refetching() {
    let img = TestImage::new(16 * MIB, 5).await;
    let torrent = &img.torrent;
    let seed = img
        .seeder(EngineConfig {
            upload_limit: Some(8 * MIB as u64),
            ..Default::default()
        })
        .await;
    let c = img.client("c", dialing(&[&seed])).await;
    let half = torrent.piece_count() / 2;
    let mut events = c.subscribe();
    for _ in 0..half {
        within("half the pieces", Duration::from_secs(60), events.recv())
            .await
            .unwrap();
    }
    c.shutdown().await.unwrap();
    let had = c.stats().pieces.have;
    assert!(had >= half && had < torrent.piece_count());

    let (out, bits) = img.client_paths("c");
    let (_, resume) = Storage::open_download(&out, torrent, &bits).unwrap();
    assert_eq!(
        resume.recorded, had,
        "every verified piece was recorded at shutdown"
    );
    // Unfinished pieces had their received blocks verified alone and kept (the torrent has a
    // block-hash table); no verified piece lost its record.
    assert_eq!(resume.rehashed_ok, 0);
    let c = img.client("c", dialing(&[&seed])).await;
    within(
        "resumed download",
        Duration::from_secs(60),
        c.wait_complete(),
    )
    .await
    .unwrap();
    // Kept blocks of unfinished pieces are not fetched again either.
    let missing =
        (torrent.piece_count() - had) as u64 * PIECE as u64 - resume.blocks_kept as u64 * 16384;
    let st = c.stats();
    assert!(
        st.downloaded <= missing,
        "refetched verified data: {} bytes downloaded, {missing} were missing",
        st.downloaded
    );
    assert_eq!(st.downloaded, missing);
    shutdown_all(&[&c, &seed]).await;
    img.assert_client_has_image("c");
}

// ---- the real binaries ----

pub(crate) fn vmt_run() -> Command {
    Command::new(vmt_tests::bin("vmt-run"))
}

/// `vmt-run seed` + two `vmt-run fetch`; one fetch is killed with SIGKILL halfway and
/// restarted: it resumes and the result is byte-identical.
#[test]
fn cli_seed_fetch_kill_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(6, 16 * MIB);
    let img = dir.path().join("app.img");
    std::fs::write(&img, &data).unwrap();
    let torrent = dir.path().join("app.torrent");
    let seeder = CliSeeder::start(
        &img,
        &torrent,
        &["--piece-size", "256KiB", "--upload-limit", "4MiB"],
    );
    let seed_addr = seeder.addr.clone();

    // First fetch: SIGKILL once its bitmap records some pieces.
    let out = dir.path().join("got.img");
    let bits = dir.path().join("got.img.vmtbits");
    let fetch = || {
        let mut cmd = vmt_run();
        cmd.args(["fetch", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &seed_addr, "--out"])
            .arg(&out);
        cmd
    };
    let mut first = Proc::spawn(fetch().stdout(Stdio::null()).stderr(Stdio::null()));
    vmt_tests::wait_until("the bitmap records pieces", Duration::from_secs(60), || {
        std::fs::metadata(&bits).is_ok_and(|m| m.len() > 0)
    });
    std::thread::sleep(Duration::from_millis(500));
    first.sigkill();
    assert!(
        std::fs::read(&out).unwrap() != data,
        "killed too late to test resuming"
    );

    let second = vmt_tests::run_with_timeout(&mut fetch(), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "fetch failed:\n{stdout}\n{stderr}");
    assert!(
        std::fs::read(&out).unwrap() == data,
        "resumed download differs"
    );
    // "resumed N pieces" and "downloaded B bytes" in the summary.
    let num_after = |key: &str| -> u64 {
        let text = format!("{stdout}{stderr}");
        let at = text
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
        text[at + key.len()..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let resumed = num_after("resumed");
    let downloaded = num_after("downloaded");
    assert!(resumed > 0, "nothing was resumed");
    let n = (16 * MIB as u64).div_ceil(PIECE as u64);
    assert!(
        downloaded <= (n - resumed) * PIECE as u64,
        "fetched {downloaded} bytes although {resumed} of {n} pieces were resumed"
    );

    // A client-server fetch next to it works too, and bad input is a clear error.
    let out2 = dir.path().join("got2.img");
    let r = vmt_tests::run_with_timeout(
        vmt_run()
            .args(["fetch", "--no-upload", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &seed_addr, "--out"])
            .arg(&out2),
        Duration::from_secs(60),
    );
    assert!(r.status.success());
    assert!(std::fs::read(&out2).unwrap() == data);
}

/// Bad input: one clear line on stderr and a non-zero exit, never a panic.
#[test]
fn cli_bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let check = |args: &[&str], expect: &str| {
        let out = vmt_tests::run_with_timeout(vmt_run().args(args), Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    };
    let missing = dir.path().join("missing.img");
    check(
        &[
            "seed",
            "--image",
            missing.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "missing.img",
    );
    let bad = dir.path().join("bad.torrent");
    std::fs::write(&bad, b"d4:spam").unwrap();
    let out = dir.path().join("o.img");
    let fetch = |torrent: &Path, expect: &str| {
        let (torrent, out) = (torrent.to_str().unwrap(), out.to_str().unwrap());
        let args = [
            "fetch",
            "--torrent",
            torrent,
            "--peer",
            "127.0.0.1:9",
            "--out",
            out,
        ];
        check(&args, expect)
    };
    fetch(&bad, "invalid torrent");
    // A busy port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let img = dir.path().join("x.img");
    std::fs::write(&img, content(9, MIB)).unwrap();
    check(
        &[
            "seed",
            "--image",
            img.to_str().unwrap(),
            "--listen",
            &busy_addr,
        ],
        "cannot listen on",
    );
    // A torrent whose block-hash table was tampered with (issue 11).
    let torrent = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(Torrent::create(&img, PIECE, Vec::new()))
        .unwrap();
    let table = torrent.block_hashes().unwrap().as_bytes();
    let at = table.as_ptr() as usize - torrent.as_bytes().as_ptr() as usize;
    let mut forged = torrent.as_bytes().to_vec();
    forged[at + 3] ^= 1;
    let forged_path = dir.path().join("forged.torrent");
    std::fs::write(&forged_path, forged).unwrap();
    for expect in [
        "forged.torrent: block-hash table refused",
        "forged or belongs to another torrent",
    ] {
        fetch(&forged_path, expect);
    }
    let help =
        vmt_tests::run_with_timeout(vmt_run().args(["fetch", "--help"]), Duration::from_secs(30));
    let help = String::from_utf8_lossy(&help.stdout);
    for opt in [
        "--torrent",
        "--peer",
        "--out",
        "--listen",
        "--seed",
        "--no-upload",
        "--download-limit",
    ] {
        assert!(help.contains(opt), "fetch --help lacks {opt}");
    }
}

// ---- tracker announces ----

/// A minimal HTTP tracker: remembers every announced port and answers with all of them as
/// compact 127.0.0.1 peers. Returns its URL and the announced ports.
async fn mock_tracker() -> (String, Arc<std::sync::Mutex<Vec<u16>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/announce", listener.local_addr().unwrap());
    let ports = Arc::new(std::sync::Mutex::new(Vec::<u16>::new()));
    let seen = ports.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let port = text
                .split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix("port="))
                .and_then(|p| p.parse::<u16>().ok());
            let peers: Vec<u8> = {
                let mut v = seen.lock().unwrap();
                if let Some(p) = port {
                    if !v.contains(&p) {
                        v.push(p);
                    }
                }
                v.iter()
                    .flat_map(|p| [127, 0, 0, 1, (p >> 8) as u8, *p as u8])
                    .collect()
            };
            // A bencoded announce reply: interval and compact peers (test fixture only).
            let mut body = format!("d8:intervali5e5:peers{}:", peers.len()).into_bytes();
            body.extend_from_slice(&peers);
            body.push(b'e');
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    (url, ports)
}

/// A client with no `--peer` finds the seeder through the torrent's tracker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_announce_finds_the_seeder() {
    let (url, ports) = mock_tracker().await;
    let img = TestImage::with_trackers(4 * MIB, 10, vec![url.clone()]).await;
    assert_eq!(img.torrent.trackers(), [url]);
    let seed = img.seeder(EngineConfig::default()).await;
    let seed_port = seed.listen_addr().unwrap().port();
    within("the seeder announces", Duration::from_secs(30), async {
        while !ports.lock().unwrap().contains(&seed_port) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let c = img.client("c", EngineConfig::default()).await;
    img.finish_download(&c, "c").await;
    shutdown_all(&[&seed]).await;
}

/// With no reachable peer, `fetch` says so, keeps retrying, and SIGTERM stops it cleanly with
/// its progress file written.
#[test]
fn cli_unreachable_peer_is_reported_and_sigterm_stops() {
    use std::io::{BufRead, BufReader};
    let img = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestImage::new(MIB, 11));
    let torrent = img.dir.path().join("app.torrent");
    img.torrent.save(&torrent).unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let out = img.dir.path().join("got.img");
    let mut child = Proc::spawn(
        vmt_run()
            .args(["fetch", "--torrent"])
            .arg(&torrent)
            .args(["--peer", &dead, "--out"])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen
        .iter()
        .any(|l: &String| l.contains("no reachable peer") && l.contains(&dead))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no 'no reachable peer' status within 30 s: {seen:?}"),
        }
    }
    let status = child.sigterm();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(!status.success(), "an interrupted fetch must not exit 0");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
}

/// Regression (found with Transmission 3.00, which pipelines ~700 requests on loopback): the
/// seeder used to drop requests beyond 512 queued, and the leecher stalled at 81.6 % waiting
/// for them. Every request of a deep pipeline must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_request_pipelines_are_all_served() {
    use peer_binary_protocol::extended::PeerExtendedMessageIds;
    use peer_binary_protocol::{Handshake, Message, MessageDeserializeError, Request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let img = TestImage::new(16 * MIB, 30).await;
    let (torrent, data) = (&img.torrent, &img.data);
    let seed = img.seeder(EngineConfig::default()).await;
    let mut s = tokio::net::TcpStream::connect(seed.listen_addr().unwrap())
        .await
        .unwrap();
    let ext = || PeerExtendedMessageIds {
        ut_metadata: None,
        ut_pex: None,
    };
    let mut out = vec![0u8; 1 << 20];
    let id = librqbit_core::hash_id::Id20::new(*b"-DEEP00-abcdefghijkl");
    let k = Handshake::new(torrent.info_hash(), id).serialize_unchecked_len(&mut out);
    s.write_all(&out[..k]).await.unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    let k = Message::Interested.serialize(&mut out, &ext).unwrap();
    s.write_all(&out[..k]).await.unwrap();
    let blocks = (16 * MIB / 16384) as u32; // 1024 requests in one burst
    let mut buf = vec![0u8; 4 << 20];
    let (mut start, mut end) = (0, 0);
    let mut got = 0u32;
    let mut sent = false;
    while got < blocks {
        let n = within("pieces", Duration::from_secs(30), s.read(&mut buf[end..]))
            .await
            .unwrap();
        assert!(n > 0, "seeder closed after {got} blocks");
        end += n;
        loop {
            match Message::deserialize(&buf[start..end], &[]) {
                Ok((msg, used)) => {
                    match msg {
                        Message::Unchoke if !sent => {
                            let mut k = 0;
                            for b in 0..blocks {
                                let r = Request::new(b / 16, (b % 16) * 16384, 16384);
                                k += Message::Request(r).serialize(&mut out[k..], &ext).unwrap();
                            }
                            s.write_all(&out[..k]).await.unwrap();
                            sent = true;
                        }
                        Message::Piece(p) => {
                            let (b0, b1) = p.data();
                            let at = p.index as usize * PIECE as usize + p.begin as usize;
                            assert!(b0 == &data[at..at + b0.len()]);
                            assert!(b1 == &data[at + b0.len()..at + b0.len() + b1.len()]);
                            got += 1;
                        }
                        _ => {}
                    }
                    start += used;
                }
                Err(MessageDeserializeError::NotEnoughData(..)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
    }
    assert_eq!(got, blocks);
    shutdown_all(&[&seed]).await;
}

/// Dropping every handle without `shutdown` still stops the engine: its listener closes and
/// the bitmap is recorded one last time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_engine_stops_and_records_its_bitmap() {
    let img = TestImage::new(4 * MIB, 31).await;
    let torrent = &img.torrent;
    let seed = img.seeder(EngineConfig::default()).await;
    let c = img
        .client(
            "c",
            EngineConfig {
                // Only the final flush can record the pieces.
                flush_interval: Duration::from_secs(3600),
                ..dialing(&[&seed])
            },
        )
        .await;
    within("download", Duration::from_secs(60), c.wait_complete())
        .await
        .unwrap();
    let addr = c.listen_addr().unwrap();
    drop(c);
    within("the listener closes", Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (out, bits) = img.client_paths("c");
    // The bitmap may exist from before (an early flush): wait for the one that records all.
    within("the final flush", Duration::from_secs(10), async {
        while Storage::recorded_pieces(&bits, torrent).ok() != Some(torrent.piece_count()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (_, resume) = Storage::open_download(&out, torrent, &bits).unwrap();
    assert_eq!(resume.recorded, torrent.piece_count());
    shutdown_all(&[&seed]).await;
}

/// `max_peers` bounds connections; a refused client keeps redialing and gets its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_peers_is_enforced_and_refused_clients_retry() {
    let img = TestImage::new(4 * MIB, 32).await;
    let seed = img
        .seeder(EngineConfig {
            max_peers: 1,
            upload_limit: Some(2 * MIB as u64),
            ..Default::default()
        })
        .await;
    let config = EngineConfig {
        upload: false,
        max_redial_backoff: Duration::from_millis(500),
        ..dialing(&[&seed])
    };
    let a = img.client("a", config.clone()).await;
    within("a connects", Duration::from_secs(30), async {
        while seed.stats().connected == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let b = img.client("b", config).await;
    // While a downloads, b is refused every time it dials.
    within("a completes", Duration::from_secs(60), async {
        while !a.is_complete() {
            assert!(
                seed.stats().connected <= 1,
                "more than max_peers connections"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(b.stats().pieces.have, 0);
    shutdown_all(&[&a]).await;
    img.assert_client_has_image("a");
    // b gets its turn.
    img.finish_download(&b, "b").await;
    shutdown_all(&[&seed]).await;
}
