//! The piece sizes vmt makes torrents with: the one rule `vmt-run seed` applies when it creates
//! a torrent and `vmt-train eval` applies to the mounts it predicts, so that eval never reports
//! figures for a torrent no seeder can make.

/// Smallest piece: one BitTorrent block (BEP 3's 16 KiB request unit); a smaller piece would
/// be a partial request.
pub const MIN_PIECE_BYTES: u32 = 16 << 10;

/// Largest piece: bigger pieces make a demanded read wait for too many bytes, make each piece
/// buffer huge, and stock clients refuse much larger ones.
pub const MAX_PIECE_BYTES: u32 = 16 << 20;

/// A piece size vmt does not make torrents with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("piece size {0} is not a power of two from 16 KiB to 16 MiB (what `vmt-run seed` makes)")]
pub struct BadPieceSize(pub u32);

/// Checks that `bytes` is a power of two from [`MIN_PIECE_BYTES`] to [`MAX_PIECE_BYTES`].
pub fn check_piece_size(bytes: u32) -> Result<u32, BadPieceSize> {
    if (MIN_PIECE_BYTES..=MAX_PIECE_BYTES).contains(&bytes) && bytes.is_power_of_two() {
        Ok(bytes)
    } else {
        Err(BadPieceSize(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_two_from_16_kib_to_16_mib() {
        for good in [16 << 10, 32 << 10, 256 << 10, 1 << 20, 16 << 20] {
            assert_eq!(check_piece_size(good), Ok(good));
        }
        for bad in [
            0,
            1,
            8 << 10,
            (16 << 10) - 1,
            100_000,
            3 << 20,
            32 << 20,
            u32::MAX,
        ] {
            assert_eq!(check_piece_size(bad), Err(BadPieceSize(bad)));
        }
        assert_eq!(
            BadPieceSize(100_000).to_string(),
            "piece size 100000 is not a power of two from 16 KiB to 16 MiB (what `vmt-run seed` makes)"
        );
    }
}
