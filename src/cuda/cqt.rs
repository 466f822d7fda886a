//! Launchers for `kernels/cqt.cu`: the magnitude CQT of `crate::audio::cqt::CqtPlan` on the device,
//! for a batch of equal-length clips (zero-pad ragged clips: trailing zeros leave the frames of the
//! shorter clip unchanged, so its result is the first `plan.n_frames(len)` rows).
//!
//! Per forward: a four-step FFT of every overlap-save block (two shared-memory passes), the real
//! half spectrum, then one thread block per (block, bin) folding the spectrum with the bin's sparse
//! kernel band and inverse-transforming the fold. Everything the plan owns (sparse kernel bands in CSR
//! form, twiddle table) is uploaded once by [`CqtDevicePlan::new`].

use anyhow::{ensure, Context, Result};

use super::check;
use crate::audio::cqt::CqtPlan;
use crate::audio::fft::Complex;
use crate::device::registry;
use crate::device::{CudaDevice, DeviceBuffer, KernelArgs, LaunchConfig};

/// Threads per block of every CQT kernel.
const THREADS: u32 = 256;
/// Largest sub-FFT of the four-step block FFT (32 KiB of shared memory in f32 complex).
const MAX_SUB_FFT: usize = 4096;
/// Largest fold size P (its inverse FFT lives in shared memory: 64 KiB, opt-in above 48 KiB).
const MAX_FOLD: usize = 8192;
/// Grid cap of the elementwise real-spectrum kernel (grid-stride loop).
const MAX_SPECTRUM_BLOCKS: u32 = 4096;

/// A [`CqtPlan`] uploaded to one device: sparse kernel bands and twiddles, plus the launch constants.
pub struct CqtDevicePlan {
    n_bins: usize,
    hop: usize,
    /// Overlap-save block length Lb; the packed complex FFT has M = Lb/2 points, M = n1 * n2.
    block: usize,
    log2n1: u32,
    log2n2: u32,
    /// Fold size P (power of two) and output step hop / s between frames in the folded IFFT.
    log2p: u32,
    frame_step: usize,
    frames_per_block: usize,
    /// e^{-2 pi i j / Lb}, j < Lb/2, rounded from f64.
    twiddles: DeviceBuffer<[f32; 2]>,
    /// All bands' coefficients back to back (conj(K_k[q]) sqrt(l_k) / Lb, as in the plan).
    coef: DeviceBuffer<[f32; 2]>,
    /// CSR offsets into `coef`, n_bins + 1 entries.
    band_start: DeviceBuffer<i64>,
    /// First spectrum bin of each band, reduced modulo Lb.
    band_lo: DeviceBuffer<i32>,
}

impl CqtDevicePlan {
    /// Uploads `plan` (for MERT: 3.06M coefficients, 24 MB, plus a 512 KB twiddle table).
    pub fn new(dev: &CudaDevice, plan: &CqtPlan) -> Result<Self> {
        let block = plan.block_len();
        let (fold, spacing) = plan.fold_len();
        ensure!(
            block.is_power_of_two() && (4..=1 << 25).contains(&block),
            "CQT device plan: block length {block} must be a power of two in [4, 2^25]"
        );
        ensure!(
            fold.is_power_of_two() && fold <= MAX_FOLD,
            "CQT device plan: fold size {fold} exceeds {MAX_FOLD} (hop {} has too few factors of two)",
            plan.hop()
        );
        let m = block / 2;
        let log2m = m.trailing_zeros();
        let (log2n1, log2n2) = (log2m / 2, log2m - log2m / 2);
        debug_assert!(1 << log2n2 <= MAX_SUB_FFT);
        let n_bins = plan.n_bins();
        ensure!(
            n_bins <= 65535,
            "CQT device plan: {n_bins} bins exceed the grid's 65535"
        );
        let mut coef: Vec<[f32; 2]> = Vec::with_capacity(plan.stored_coefficients());
        let mut band_start = Vec::with_capacity(n_bins + 1);
        let mut band_lo = Vec::with_capacity(n_bins);
        band_start.push(0i64);
        for k in 0..n_bins {
            let (lo, values) = plan.kernel_band(k);
            ensure!(
                values.len() <= block,
                "CQT device plan: band of bin {k} is longer than the block"
            );
            coef.extend_from_slice(values);
            band_start.push(coef.len() as i64);
            band_lo.push(lo.rem_euclid(block as i64) as i32);
        }
        let twiddles: Vec<[f32; 2]> = (0..m)
            .map(|j| {
                let w = Complex::cis(-2.0 * std::f64::consts::PI * j as f64 / block as f64);
                [w.re as f32, w.im as f32]
            })
            .collect();
        let upload = || -> Result<_> {
            Ok((
                dev.htod(&twiddles)?,
                dev.htod(&coef)?,
                dev.htod(&band_start)?,
                dev.htod(&band_lo)?,
            ))
        };
        let (twiddles, coef, band_start, band_lo) =
            upload().context("CQT device plan: uploading kernel bands and twiddles")?;
        Ok(CqtDevicePlan {
            n_bins,
            hop: plan.hop(),
            block,
            log2n1,
            log2n2,
            log2p: fold.trailing_zeros(),
            frame_step: plan.hop() / spacing,
            frames_per_block: plan.frames_per_block(),
            twiddles,
            coef,
            band_start,
            band_lo,
        })
    }

    pub fn n_bins(&self) -> usize {
        self.n_bins
    }

    /// Output frames for clips of `samples` samples: floor(samples / hop) + 1 (center=True).
    pub fn n_frames(&self, samples: usize) -> usize {
        samples / self.hop + 1
    }

    /// Magnitude CQT of `batch` clips of `samples` samples each (audio [batch, samples] row-major):
    /// returns [batch, frames, n_bins] with frames = `n_frames(samples)`.
    pub fn forward(
        &self,
        dev: &CudaDevice,
        audio: &DeviceBuffer<f32>,
        batch: usize,
        samples: usize,
    ) -> Result<DeviceBuffer<f32>> {
        ensure!(
            batch > 0 && samples > 0,
            "CQT forward: empty input ({batch} clips of {samples} samples)"
        );
        check::len("CQT forward audio", audio, batch * samples)?;
        let frames = self.n_frames(samples);
        let blocks_per_clip = frames.div_ceil(self.frames_per_block);
        let clip_blocks = batch * blocks_per_clip;
        ensure!(
            clip_blocks <= 65535,
            "CQT forward: {batch} clips x {blocks_per_clip} blocks exceed 65535 per launch; \
             split the batch"
        );
        let m = self.block / 2;
        let (n1, n2) = (1usize << self.log2n1, 1usize << self.log2n2);
        let cb = clip_blocks as u32;
        // scratch: y (pass 1) and later X (M + 1 per block) share one buffer; Z the other
        let mut yx = dev.alloc::<[f32; 2]>(clip_blocks * (m + 1))?;
        let mut z = dev.alloc::<[f32; 2]>(clip_blocks * m)?;
        let lb = check::int("CQT block length", self.block)?;

        let cfg = LaunchConfig::new((n2 as u32, cb, 1), (THREADS, 1, 1)).with_shared(8 * n1 as u32);
        let args = KernelArgs::new()
            .buf_mut(&mut yx)
            .buf(audio)
            .buf(&self.twiddles)
            .i32(check::int("CQT samples", samples)?)
            .i32(blocks_per_clip as i32)
            .i32(check::int(
                "CQT block offset",
                self.hop * self.frames_per_block,
            )?)
            .i32(self.log2n1 as i32)
            .i32(n2 as i32)
            .i32(lb);
        dev.launch(&registry::CQT_BLOCK_FFT_COLUMNS, cfg, args)?;

        let cfg = LaunchConfig::new((n1 as u32, cb, 1), (THREADS, 1, 1)).with_shared(8 * n2 as u32);
        let args = KernelArgs::new()
            .buf_mut(&mut z)
            .buf(&yx)
            .buf(&self.twiddles)
            .i32(n1 as i32)
            .i32(self.log2n2 as i32)
            .i32(lb);
        dev.launch(&registry::CQT_BLOCK_FFT_ROWS, cfg, args)?;

        let total = clip_blocks * (m + 1);
        let cfg = LaunchConfig::for_elements(total, THREADS, MAX_SPECTRUM_BLOCKS);
        let args = KernelArgs::new()
            .buf_mut(&mut yx)
            .buf(&z)
            .buf(&self.twiddles)
            .i64(total as i64)
            .i32(lb);
        dev.launch(&registry::CQT_REAL_SPECTRUM, cfg, args)?;
        drop(z);

        let mut out = dev.alloc::<f32>(batch * frames * self.n_bins)?;
        let cfg = LaunchConfig::new((cb, self.n_bins as u32, 1), (THREADS, 1, 1))
            .with_shared(8 << self.log2p);
        let args = KernelArgs::new()
            .buf_mut(&mut out)
            .buf(&yx)
            .buf(&self.coef)
            .buf(&self.band_start)
            .buf(&self.band_lo)
            .buf(&self.twiddles)
            .i32(check::int("CQT bins", self.n_bins)?)
            .i32(check::int("CQT frames", frames)?)
            .i32(blocks_per_clip as i32)
            .i32(self.frames_per_block as i32)
            .i32(self.frame_step as i32)
            .i32(self.log2p as i32)
            .i32(lb);
        dev.launch(&registry::CQT_FOLD_BINS, cfg, args)?;
        Ok(out)
    }

    /// One clip: audio [samples] -> [frames, n_bins].
    pub fn forward_clip(
        &self,
        dev: &CudaDevice,
        audio: &DeviceBuffer<f32>,
    ) -> Result<DeviceBuffer<f32>> {
        self.forward(dev, audio, 1, audio.len())
    }
}
