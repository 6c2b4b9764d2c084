//! aarch64 NEON kernels: `#[target_feature]` copies of the scalar loops.
//!
//! Written against the documented `core::arch::aarch64` signatures; the x86-64 machine this
//! crate is developed on cannot compile or run it (no aarch64 standard library installed), so
//! it is exercised only where the crate is built for aarch64. Only `kernels` calls these,
//! after `SimdLevel::is_supported` confirmed NEON.

use std::arch::aarch64::*;

/// # Safety
/// The CPU must support NEON (every aarch64 Linux CPU does).
#[target_feature(enable = "neon")]
pub(in crate::vector) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    // SAFETY (all loads): `i + width <= n`, so every lane read is inside both slices.
    while i + 16 <= n {
        for (j, lane) in acc.iter_mut().enumerate() {
            let off = i + 4 * j;
            let (x, y) = unsafe { (vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off))) };
            *lane = vfmaq_f32(*lane, x, y);
        }
        i += 16;
    }
    while i + 4 <= n {
        let (x, y) = unsafe { (vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        acc[0] = vfmaq_f32(acc[0], x, y);
        i += 4;
    }
    let total = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut sum = vaddvq_f32(total);
    for j in i..n {
        sum += a[j] * b[j];
    }
    sum
}

/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(in crate::vector) unsafe fn scores_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    if query.is_empty() {
        out.fill(0.0);
        return;
    }
    for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
        *score = unsafe { dot_f32(query, row) };
    }
}

/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(in crate::vector) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = vdupq_n_s32(0);
    let mut acc1 = vdupq_n_s32(0);
    let mut i = 0;
    // int8×int8 → int16 (exact, |−128·−128| < 2¹⁵), then pairwise add-accumulate into int32.
    // SAFETY (all loads): `i + 16 <= n`, so every byte read is inside both slices.
    while i + 16 <= n {
        let (x, y) = unsafe { (vld1q_s8(pa.add(i)), vld1q_s8(pb.add(i))) };
        acc0 = vpadalq_s16(acc0, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
        acc1 = vpadalq_s16(acc1, vmull_high_s8(x, y));
        i += 16;
    }
    let mut sum = vaddvq_s32(vaddq_s32(acc0, acc1));
    for j in i..n {
        sum = sum.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
    }
    sum
}

/// Raw int8 dots of `query` against each row, as `f32`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(in crate::vector) unsafe fn dots_i8(query: &[i8], rows: &[i8], out: &mut [f32]) {
    if query.is_empty() {
        out.fill(0.0);
        return;
    }
    for (row, score) in rows.chunks_exact(query.len()).zip(out.iter_mut()) {
        *score = unsafe { dot_i8(query, row) } as f32;
    }
}
