//! Default file names beside what the user named: a command's files sit next to its input,
//! named by appending a suffix, so several images can share a directory.

use std::path::{Path, PathBuf};

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The `.torrent` `vmt-run seed` writes for `image`: `IMG.torrent`.
pub fn torrent_for(image: &Path) -> PathBuf {
    with_suffix(image, ".torrent")
}

/// The verified-piece bitmap of a fetched image `out`: `OUT.vmtbits`.
pub fn bitmap_for(out: &Path) -> PathBuf {
    with_suffix(out, ".vmtbits")
}

/// The piece store and overlay of a mount of `torrent`: `T.vmt-data`.
pub fn data_dir_for(torrent: &Path) -> PathBuf {
    with_suffix(torrent, ".vmt-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_append_to_the_whole_name() {
        assert_eq!(
            torrent_for(Path::new("d/app.img")),
            Path::new("d/app.img.torrent")
        );
        assert_eq!(
            bitmap_for(Path::new("app.img")),
            Path::new("app.img.vmtbits")
        );
        assert_eq!(
            data_dir_for(Path::new("a.torrent")),
            Path::new("a.torrent.vmt-data")
        );
    }
}
