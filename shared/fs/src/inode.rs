//! The filesystem's fixed namespace: a root directory holding the image and, for recording
//! sessions, a control file. Nothing is ever created or removed, so inode numbers are
//! constants and the table is an enum.

use std::time::SystemTime;

/// Name of the control file of recording sessions (`mark TASK` / `stop` lines are written to it).
pub const CONTROL_FILE: &str = ".vmt-control";

/// One of the filesystem's three inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The mount's directory.
    Root,
    /// The image file.
    Image,
    /// The control file (recording sessions only).
    Control,
}

impl Node {
    /// The inode number the kernel sees (1 is FUSE's root).
    pub const fn ino(self) -> u64 {
        match self {
            Node::Root => 1,
            Node::Image => 2,
            Node::Control => 3,
        }
    }

    /// The node of inode number `ino`, if it is one of ours.
    pub const fn from_ino(ino: u64) -> Option<Node> {
        match ino {
            1 => Some(Node::Root),
            2 => Some(Node::Image),
            3 => Some(Node::Control),
            _ => None,
        }
    }

    /// Whether it is the directory.
    pub const fn is_dir(self) -> bool {
        matches!(self, Node::Root)
    }
}

/// A node's attributes, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Which node.
    pub node: Node,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner: the user who mounted.
    pub uid: u32,
    /// Group: the group of the user who mounted.
    pub gid: u32,
    /// Access, modification and change time: the mount's start.
    pub time: SystemTime,
}

/// How the kernel may cache an opened file's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCache {
    /// Bypass the page cache, so every access reaches the filesystem (recording, control).
    Bypass,
    /// Keep cached pages across opens: the image's bytes never change under the kernel.
    Keep,
}
