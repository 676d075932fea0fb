//! The parts of a stream an inspector keeps: a fixed byte range ([`Region`]) or the last
//! bytes before the end ([`Tail`]). Both take the stream's chunks as they come, of any
//! size, and may be given the same chunk more than once (an inspector that learns of a
//! new region while reading a chunk hands that chunk to it too): what they keep does not
//! depend on how the stream was cut into chunks.

/// `length` bytes of the stream from `offset`.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    offset: u64,
    length: usize,
    data: Vec<u8>,
}

impl Region {
    pub(crate) fn new(offset: u64, length: usize) -> Self {
        Region {
            offset,
            length,
            data: Vec::new(),
        }
    }

    /// Where the region starts in the stream.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Takes what it still needs of `chunk`, which starts at stream offset `start`. A
    /// region that starts before a chunk it sees first (it was created after its bytes
    /// went by) never fills.
    pub(crate) fn feed(&mut self, chunk: &[u8], start: u64) {
        if self.is_full() {
            return;
        }
        let want = self.offset.saturating_add(self.data.len() as u64);
        let end = start + chunk.len() as u64;
        if want < start || want >= end {
            return;
        }
        // want - start < chunk.len(), so it fits in usize.
        let from = usize::try_from(want - start).unwrap_or(chunk.len());
        let take = (chunk.len() - from).min(self.length - self.data.len());
        self.data.extend_from_slice(&chunk[from..from + take]);
    }

    /// Whether it holds all its bytes.
    pub(crate) fn is_full(&self) -> bool {
        self.data.len() == self.length
    }

    /// What it holds so far.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Stops it where it is: what it holds is all it wants.
    pub(crate) fn truncate_here(&mut self) {
        self.length = self.data.len();
    }
}

/// The last `length` bytes of the stream.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    length: usize,
    data: Vec<u8>,
    /// The stream offset up to which it has seen the data.
    seen: u64,
}

impl Tail {
    pub(crate) fn new(length: usize) -> Self {
        Tail {
            length,
            data: Vec::new(),
            seen: 0,
        }
    }

    /// Takes the part of `chunk` (at stream offset `start`) it has not seen yet.
    pub(crate) fn feed(&mut self, chunk: &[u8], start: u64) {
        let end = start + chunk.len() as u64;
        if end <= self.seen {
            return;
        }
        let skip = usize::try_from(self.seen.saturating_sub(start)).unwrap_or(chunk.len());
        let new = &chunk[skip.min(chunk.len())..];
        self.seen = end;
        if new.len() >= self.length {
            self.data.clear();
            self.data.extend_from_slice(&new[new.len() - self.length..]);
        } else {
            let over = (self.data.len() + new.len()).saturating_sub(self.length);
            self.data.drain(..over);
            self.data.extend_from_slice(new);
        }
    }

    /// Whether it holds its `length` bytes (meaningful once the stream ended).
    pub(crate) fn is_full(&self) -> bool {
        self.data.len() == self.length
    }

    /// What it holds.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }
}

/// Big-endian and little-endian integers at `at` in `data`; 0 when `data` is too short
/// (callers check lengths first: a header that is too short does not match).
pub(crate) fn be_u64(data: &[u8], at: usize) -> u64 {
    bytes::<8>(data, at).map_or(0, u64::from_be_bytes)
}

pub(crate) fn be_u32(data: &[u8], at: usize) -> u32 {
    bytes::<4>(data, at).map_or(0, u32::from_be_bytes)
}

pub(crate) fn be_i16(data: &[u8], at: usize) -> i16 {
    bytes::<2>(data, at).map_or(0, i16::from_be_bytes)
}

pub(crate) fn le_u64(data: &[u8], at: usize) -> u64 {
    bytes::<8>(data, at).map_or(0, u64::from_le_bytes)
}

pub(crate) fn le_u32(data: &[u8], at: usize) -> u32 {
    bytes::<4>(data, at).map_or(0, u32::from_le_bytes)
}

pub(crate) fn le_u16(data: &[u8], at: usize) -> u16 {
    bytes::<2>(data, at).map_or(0, u16::from_le_bytes)
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        (0..5000u32).map(|i| (i % 251) as u8).collect()
    }

    /// Feeds `data` cut in `size` pieces, each piece twice (as an inspector that added
    /// a region mid-chunk does).
    fn cut(data: &[u8], size: usize, mut f: impl FnMut(&[u8], u64)) {
        let mut start = 0u64;
        for piece in data.chunks(size) {
            f(piece, start);
            f(piece, start);
            start += piece.len() as u64;
        }
    }

    #[test]
    fn region_is_the_same_however_the_stream_is_cut() {
        let data = stream();
        for size in [1, 7, 100, 512, 4096, 5000] {
            let mut r = Region::new(1000, 600);
            cut(&data, size, |c, s| r.feed(c, s));
            assert!(r.is_full(), "size {size}");
            assert_eq!(r.data(), &data[1000..1600], "size {size}");
        }
    }

    #[test]
    fn region_created_after_its_bytes_never_fills() {
        let data = stream();
        let mut r = Region::new(10, 20);
        r.feed(&data[100..200], 100);
        assert!(!r.is_full());
        assert!(r.data().is_empty());
    }

    #[test]
    fn region_past_the_end_stays_partial() {
        let data = stream();
        let mut r = Region::new(4900, 512);
        cut(&data, 64, |c, s| r.feed(c, s));
        assert_eq!(r.data(), &data[4900..]);
        assert!(!r.is_full());
    }

    #[test]
    fn tail_keeps_the_last_bytes_however_the_stream_is_cut() {
        let data = stream();
        for size in [1, 7, 100, 1536, 4096, 5000] {
            let mut t = Tail::new(1536);
            cut(&data, size, |c, s| t.feed(c, s));
            assert!(t.is_full());
            assert_eq!(t.data(), &data[data.len() - 1536..], "size {size}");
        }
        let mut short = Tail::new(1536);
        short.feed(&data[..100], 0);
        assert_eq!(short.data(), &data[..100]);
        assert!(!short.is_full());
    }

    #[test]
    fn integers() {
        let d = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(be_u32(&d, 0), 0x0102_0304);
        assert_eq!(le_u32(&d, 4), 0x0807_0605);
        assert_eq!(be_u64(&d, 0), 0x0102_0304_0506_0708);
        assert_eq!(le_u16(&d, 6), 0x0807);
        assert_eq!(be_i16(&[0xff, 0xfe], 0), -2);
        assert_eq!(le_u64(&d, 1), 0, "too short");
    }
}
