//! Branch-free exp for f64 and f32 that the compiler can vectorize (std's exp is a libm call).
//! exp(y) = 2ⁿ e^r with n = round(y/ln2) found by the 1.5·2^p "magic number" rounding (its low
//! mantissa bits are n as an integer), r = y - n ln2 with ln2 split in a high part (trailing zero
//! bits, so n·hi is exact) and a low part, and e^r from its Taylor series on |r| ≤ ln2/2.
//! f64: degree 13, relative error ~2e-16. f32: degree 7, error ≤ 1 ulp plus rounding.
//! Inputs are clamped to the normal range (f64 [-708, 709], f32 [-87, 88]): below it the result is
//! e^-708 resp. e^-87 instead of a subnormal/zero, an absolute error < 2e-38.

/// 1/j! for j = 0..N.
const fn inverse_factorials<const N: usize>() -> [f64; N] {
    let mut c = [0.0; N];
    let mut fact = 1.0;
    let mut j = 0;
    while j < N {
        if j > 0 {
            fact *= j as f64;
        }
        c[j] = 1.0 / fact;
        j += 1;
    }
    c
}

const EXP_F64_TAYLOR: [f64; 14] = inverse_factorials::<14>();
const EXP_F32_TAYLOR: [f64; 8] = inverse_factorials::<8>();
/// fdlibm's ln2_hi (low 21 mantissa bits zero) and ln2_lo = ln2 - ln2_hi rounded (checked with
/// mpmath); LN_2 - hi in f64 would carry LN_2's own rounding error.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

#[inline(always)]
pub fn exp_f64(y: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let y = y.clamp(-708.0, 709.0);
    let k = y * std::f64::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_F64_TAYLOR[13];
    for j in (0..13).rev() {
        p = p.mul_add(r, EXP_F64_TAYLOR[j]); // fused: exact on every platform, one op with FMA
    }
    let ni = k.to_bits() as i64 - MAGIC.to_bits() as i64;
    p * f64::from_bits(((ni + 1023) as u64) << 52)
}

#[inline(always)]
pub fn exp_f32(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    const HI: f32 = 0.693_359_4; // 0.693359375: 9 significant bits, n·HI exact
    const LO: f32 = (std::f64::consts::LN_2 - 0.693_359_375) as f32;
    let y = y.clamp(-87.0, 88.0);
    let k = y * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    let r = (y - n * HI) - n * LO;
    let mut p = EXP_F32_TAYLOR[7] as f32;
    for j in (0..7).rev() {
        p = p * r + EXP_F32_TAYLOR[j] as f32;
    }
    let ni = k.to_bits() as i32 - MAGIC.to_bits() as i32;
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// Runs `body` compiled for AVX-512 (16 f32 / 8 f64 lanes) or AVX2+FMA when the CPU has them
/// (wider vectorization of branch-free loops; the compiler never contracts a*b+c and explicit
/// `mul_add` is fused on every path, so results are bit-identical to the baseline build), else as is.
#[inline(always)]
pub fn with_simd<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
        unsafe fn run_avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run_avx2<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { run_avx512(body) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { run_avx2(body) };
        }
    }
    body()
}
