//! Which instruction set the encoder's kernels run with, decided at run time.
//!
//! The cap is [`SimdLevel::detect`] (so `ROUTEGUARD_SIMD=scalar|avx2|avx512` forces a level
//! here as it does for vector search); on top of it the f16 weight path needs F16C (the
//! AVX2 kernels) or AVX-512F (whose `vcvtph2ps` takes a full 512-bit register). Every SIMD
//! entry point re-checks [`Isa::is_supported`] before it calls a `#[target_feature]`
//! function, so no safe call can reach an instruction the CPU lacks.

use crate::vector::SimdLevel;

/// The code path the encoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (the reference every SIMD path is tested against).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (256-bit).
    Avx2,
    /// x86-64 AVX-512F and VL (+ AVX2, FMA, F16C for the narrower helpers).
    Avx512,
}

impl Isa {
    /// Every path, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Its name, as `simd_level` spells the matching level.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path's kernels.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The widest supported path not above the process's [`SimdLevel`].
    pub fn detect() -> Isa {
        let cap = match SimdLevel::detect() {
            SimdLevel::Avx512 => Isa::Avx512,
            SimdLevel::Avx2 => Isa::Avx2,
            SimdLevel::Scalar | SimdLevel::Neon => Isa::Scalar,
        };
        Isa::ALL
            .into_iter()
            .rfind(|isa| *isa as u8 <= cap as u8 && isa.is_supported())
            .unwrap_or(Isa::Scalar)
    }
}

/// Define `pub fn $name(isa, args..)` running the `#[inline(always)]` body `$body` compiled
/// three times: for AVX-512, for AVX2 and for the baseline target. The body is plain Rust
/// written so the compiler vectorises it (fixed-width lane arrays, no float reductions in
/// a single accumulator); the wrappers only change which instructions it may use.
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$meta])*
        pub fn $name(isa: $crate::embed::isa::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                use $crate::embed::isa::Isa;
                match isa {
                    // SAFETY: the guard checked the features the copy is compiled for.
                    Isa::Avx512 if isa.is_supported() => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 if isa.is_supported() => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            let _ = isa;
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
