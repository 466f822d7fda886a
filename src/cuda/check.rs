//! Size checks shared by the launchers: clear errors instead of out-of-bounds kernels.

use anyhow::{ensure, Result};

use crate::device::DeviceBuffer;

/// `buf` must hold at least `need` elements.
pub fn len<T: bytemuck::Pod>(what: &str, buf: &DeviceBuffer<T>, need: usize) -> Result<()> {
    ensure!(
        buf.len() >= need,
        "{what}: buffer of {} elements, {need} needed",
        buf.len()
    );
    Ok(())
}

/// A dimension passed to a kernel as `int`.
pub fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| anyhow::anyhow!("{what} = {v} exceeds the kernels' 32-bit index range"))
}
