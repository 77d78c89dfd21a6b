//! Fixtures for the core's tests: a source whose presence the test toggles and whose demands
//! it logs, and a reply that records its answers.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmt_formats::image::ImageId;

use crate::error::FsError;
use crate::image_fs::{ImageFs, ImageFsOptions};
use crate::overlay::Overlay;
use crate::reply::ReadReply;
use crate::source::PristineSource;

/// The pristine image's byte at `offset`.
pub(crate) fn pristine_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// What a missing unit reads as: garbage a correct core never serves.
pub(crate) const GARBAGE: u8 = 0xEE;

/// A source of `units` units of `unit_size` bytes, all missing until the test says.
pub(crate) struct FakeSource {
    unit_size: u32,
    present: Vec<AtomicBool>,
    demands: Mutex<Vec<(u32, u32)>>,
}

impl FakeSource {
    pub(crate) fn new(units: u32, unit_size: u32) -> FakeSource {
        FakeSource {
            unit_size,
            present: (0..units).map(|_| AtomicBool::new(false)).collect(),
            demands: Mutex::new(Vec::new()),
        }
    }

    /// Marks `unit` present (call [`ImageFs::release`] after, as the swarm would).
    pub(crate) fn arrive(&self, unit: u32) {
        self.present[unit as usize].store(true, Ordering::SeqCst);
    }

    /// Every `demand(first, last)` so far.
    pub(crate) fn demands(&self) -> Vec<(u32, u32)> {
        self.demands.lock().unwrap().clone()
    }
}

impl PristineSource for FakeSource {
    fn unit_size(&self) -> u32 {
        self.unit_size
    }

    fn is_present(&self, unit: u32) -> bool {
        self.present
            .get(unit as usize)
            .is_some_and(|p| p.load(Ordering::SeqCst))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = if self.is_present((at / u64::from(self.unit_size)) as u32) {
                pristine_byte(at)
            } else {
                GARBAGE
            };
        }
        Ok(())
    }

    fn demand(&self, first: u32, last: u32) {
        self.demands.lock().unwrap().push((first, last));
    }
}

/// How a [`FakeReply`] was answered: the bytes, or the errno.
pub(crate) type Answer = Result<Vec<u8>, i32>;

/// A reply that records its answers; clones share them.
#[derive(Clone, Default)]
pub(crate) struct FakeReply(Arc<Mutex<Vec<Answer>>>, Option<u32>);

impl FakeReply {
    /// A reply whose read was sent by thread `tid`.
    pub(crate) fn from_thread(tid: u32) -> FakeReply {
        FakeReply(Arc::default(), Some(tid))
    }

    /// The answer, if any; panics if answered more than once.
    pub(crate) fn answer(&self) -> Option<Answer> {
        let answers = self.0.lock().unwrap();
        assert!(answers.len() <= 1, "answered {} times", answers.len());
        answers.first().cloned()
    }
}

impl ReadReply for FakeReply {
    fn data(self, bytes: &[u8]) {
        self.0.lock().unwrap().push(Ok(bytes.to_vec()));
    }

    fn error(self, error: FsError) {
        self.0.lock().unwrap().push(Err(error.errno()));
    }

    fn requester(&self) -> Option<u32> {
        self.1
    }
}

/// The core under test.
pub(crate) type TestFs = ImageFs<Arc<FakeSource>, (), FakeReply>;

/// 16 KiB, the swarm's unit.
pub(crate) const UNIT: u32 = 16 << 10;

/// A filesystem over `units` missing 16 KiB units with a throwaway overlay.
pub(crate) fn test_fs(units: u32) -> (Arc<TestFs>, Arc<FakeSource>) {
    let source = Arc::new(FakeSource::new(units, UNIT));
    let size = u64::from(units) * u64::from(UNIT);
    let overlay = Arc::new(Overlay::temporary(ImageId::size_only(size)).unwrap());
    let fs = ImageFs::new(
        source.clone(),
        overlay,
        (),
        ImageFsOptions {
            file_name: "app.img".into(),
            size,
            direct_io: false,
            pristine_wait: Duration::from_secs(10),
            read_timeout: None,
        },
    );
    (Arc::new(fs), source)
}

/// The pristine bytes of `len` bytes at `offset`.
pub(crate) fn pristine(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pristine_byte(offset + i)).collect()
}

/// The image's inode number.
pub(crate) const IMAGE: u64 = 2;

/// [`UNIT`] as a byte offset.
pub(crate) const U: u64 = UNIT as u64;

/// Reads `size` bytes at `offset` of the image; the reply tells what it was answered.
pub(crate) fn read(fs: &TestFs, offset: u64, size: u32) -> FakeReply {
    let reply = FakeReply::default();
    fs.read(IMAGE, offset, size, reply.clone());
    reply
}
