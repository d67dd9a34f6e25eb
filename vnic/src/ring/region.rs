//! Shared-memory regions that rings (and, later, whole VF DMA windows) live in.
//!
//! A [`SharedRegion`] is a `MAP_SHARED` mapping made with memmap2. It is backed either by an
//! anonymous memory file (`memfd_create`, so a forked or spawned child can still reach it through
//! `/proc/<pid>/fd/<fd>`) or by a named file, typically under `/dev/shm`, that a second process
//! opens with [`SharedRegion::open`]. The mapping is page aligned, zero filled on creation, and
//! never moves while the region lives, so its address can also be handed to VFIO for DMA mapping.
//! Everything placed inside holds offsets from the region's start, never pointers.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

/// Why a region could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// A region must hold at least one byte.
    #[error("a shared region cannot be empty")]
    Empty,
    /// The operating system refused an operation on the backing file.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `open`, `resize`, `map`, ...).
        what: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A `MAP_SHARED` memory region that two threads or two processes can map at once.
#[derive(Debug)]
pub struct SharedRegion {
    map: MmapRaw,
    path: PathBuf,
    _file: File,
}

impl SharedRegion {
    /// Creates an anonymous, zero-filled region of `len` bytes backed by a memory file.
    ///
    /// Other processes can open it through [`SharedRegion::path`] (a `/proc/<pid>/fd/<fd>` path)
    /// while this region lives.
    pub fn anonymous(len: usize) -> Result<Self, RegionError> {
        if len == 0 {
            return Err(RegionError::Empty);
        }
        let name = CString::new("vnic-region").unwrap_or_default();
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call; the flags are
        // plain constants.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        let path = PathBuf::from(format!("/proc/{}/fd/{fd}", std::process::id()));
        if fd < 0 {
            return Err(RegionError::Io {
                what: "memfd_create",
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by memfd_create, is open, and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        debug_assert_eq!(file.as_raw_fd(), fd);
        Self::from_file(file, path, len)
    }

    /// Creates (or truncates) the file at `path`, sizes it to `len` zero bytes and maps it.
    pub fn create(path: impl AsRef<Path>, len: usize) -> Result<Self, RegionError> {
        let path = path.as_ref().to_path_buf();
        if len == 0 {
            return Err(RegionError::Empty);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| RegionError::Io { what: "create", path: path.clone(), source })?;
        Self::from_file(file, path, len)
    }

    /// Maps an existing file (made by [`SharedRegion::create`] or another process) at its size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RegionError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| RegionError::Io { what: "open", path: path.clone(), source })?;
        let len = file
            .metadata()
            .map_err(|source| RegionError::Io { what: "stat", path: path.clone(), source })?
            .len();
        let len = usize::try_from(len).map_err(|_| RegionError::Io {
            what: "size",
            path: path.clone(),
            source: std::io::Error::other("file larger than the address space"),
        })?;
        if len == 0 {
            return Err(RegionError::Empty);
        }
        Self::map(file, path, len)
    }

    fn from_file(file: File, path: PathBuf, len: usize) -> Result<Self, RegionError> {
        file.set_len(len as u64).map_err(|source| RegionError::Io {
            what: "resize",
            path: path.clone(),
            source,
        })?;
        Self::map(file, path, len)
    }

    fn map(file: File, path: PathBuf, len: usize) -> Result<Self, RegionError> {
        let map = MmapOptions::new().len(len).map_raw(&file).map_err(|source| RegionError::Io {
            what: "map",
            path: path.clone(),
            source,
        })?;
        Ok(Self { map, path, _file: file })
    }

    /// The region's first byte. Valid for [`SharedRegion::len`] bytes while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: an empty region cannot be made.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// A path another process can pass to [`SharedRegion::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_region_is_zeroed_and_shared_through_its_proc_path() {
        let a = SharedRegion::anonymous(8192).unwrap();
        assert_eq!(a.len(), 8192);
        let b = SharedRegion::open(a.path()).unwrap();
        // SAFETY: both pointers are valid for 8192 bytes; the test is single threaded.
        unsafe {
            assert_eq!(*a.as_ptr().add(100), 0);
            *a.as_ptr().add(100) = 42;
            assert_eq!(*b.as_ptr().add(100), 42);
        }
    }

    #[test]
    fn empty_and_missing_regions_are_errors() {
        assert!(matches!(SharedRegion::anonymous(0), Err(RegionError::Empty)));
        let err = SharedRegion::open("/nonexistent/vnic/region").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vnic/region"), "{err}");
    }
}
