//! The recording file's WAV header: 16-bit PCM, two channels, 8 kHz, the
//! canonical 44 bytes, and the repair of a file a crash left with a header
//! behind its data.
//!
//! Written by hand rather than with `hound` (which reads our prompts):
//! hound keeps the header in step while its writer lives, but cannot open a
//! file whose header is behind its data (a crash between checkpoints), and
//! that repair is the point here. The header is 44 fixed bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::timeline::RATE;

/// Bytes before the audio.
pub const HEADER_LEN: u64 = 44;

/// Channels: caller left, expert right.
const CHANNELS: u16 = 2;

/// Bytes per sample frame (both channels, 16 bits each).
pub const BLOCK_ALIGN: u64 = 4;

/// The header of a file holding `data_len` bytes of audio.
pub fn header(data_len: u64) -> [u8; HEADER_LEN as usize] {
    let data = u32::try_from(data_len).unwrap_or(u32::MAX - 36);
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&(RATE as u32).to_le_bytes());
    h[28..32].copy_from_slice(&((RATE * BLOCK_ALIGN) as u32).to_le_bytes());
    h[32..34].copy_from_slice(&(BLOCK_ALIGN as u16).to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Rewrites the size fields of `file`'s header for `data_len` bytes of
/// audio, without moving its write position.
pub fn set_length(file: &File, data_len: u64) -> io::Result<()> {
    file.write_all_at(&header(data_len), 0)
}

/// Makes a recording a crash interrupted playable: cuts a torn last
/// sample frame and sets the header to the audio the file holds. Returns
/// the audio's length in bytes. A file too short to hold a header, or
/// not one of ours, is an error and left as it is.
pub fn repair(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut start = [0u8; 12];
    if len < HEADER_LEN || file.read_exact_at(&mut start, 0).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too short for a WAV header",
        ));
    }
    if &start[0..4] != b"RIFF" || &start[8..12] != b"WAVE" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a WAV file"));
    }
    let data = (len - HEADER_LEN) / BLOCK_ALIGN * BLOCK_ALIGN;
    if HEADER_LEN + data != len {
        file.set_len(HEADER_LEN + data)?;
    }
    set_length(file, data)?;
    Ok(data)
}
