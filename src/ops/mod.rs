//! One module per kernel family. Each has: shape checks and the launcher (returning prepared
//! `Dispatch`es), the backward launcher next to the forward, a plain-loop CPU reference (`cpu`),
//! and tests at the bottom: GPU vs CPU on awkward shapes, CPU backward vs finite differences.
pub mod attention;
pub mod bce;
pub mod cache;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod matmul_coop;
pub mod optim;
pub mod reduce;
pub mod rows;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testutil;

/// The byte layout of a `#[repr(C)]` struct that kernels read as their WGSL uniform: its size and
/// (name, byte offset, WGSL scalar type) per field, for the test against the shader's declaration.
#[cfg(test)]
pub(crate) struct UniformLayout {
    pub size: usize,
    pub fields: Vec<(&'static str, usize, &'static str)>,
}

/// Rust field types that have a WGSL twin in a uniform struct.
#[cfg(test)]
pub(crate) trait WgslScalar {
    const WGSL: &'static str;
}
#[cfg(test)]
impl WgslScalar for u32 {
    const WGSL: &'static str = "u32";
}
#[cfg(test)]
impl WgslScalar for i32 {
    const WGSL: &'static str = "i32";
}
#[cfg(test)]
impl WgslScalar for f32 {
    const WGSL: &'static str = "f32";
}
#[cfg(test)]
pub(crate) fn wgsl_scalar<T: WgslScalar>(_: &T) -> &'static str {
    T::WGSL
}

/// `uniform_layout!(Params { a, b, .. })` in an op module defines (in test builds) that module's
/// `uniform_layout()`. List every field, in order: the test matches them one to one with the
/// shader's members, so a field left out here fails it too.
macro_rules! uniform_layout {
    ($t:ident { $($f:ident),* $(,)? }) => {
        #[cfg(test)]
        pub(crate) fn uniform_layout() -> $crate::ops::UniformLayout {
            let z: $t = bytemuck::Zeroable::zeroed();
            $crate::ops::UniformLayout {
                size: std::mem::size_of::<$t>(),
                fields: vec![$((stringify!($f), std::mem::offset_of!($t, $f), $crate::ops::wgsl_scalar(&z.$f))),*],
            }
        }
    };
}
pub(crate) use uniform_layout;

/// Workgroup count for one thread per element at 256 threads per workgroup, split over x/y.
pub(crate) fn grid_elems(n: usize) -> [u32; 3] {
    crate::gpu::grid((n as u32).div_ceil(256))
}

/// Workgroup count for one workgroup per row, split over x/y.
pub(crate) fn grid_rows(rows: usize) -> [u32; 3] {
    crate::gpu::grid(rows as u32)
}

/// Errors if `t` (from `off`, `n` elements) would be read past its end.
pub(crate) fn check_len(op: &'static str, what: &str, t: &crate::gpu::Tensor, n: usize) -> crate::Result<()> {
    if n > t.numel() {
        return Err(crate::Error::Shape { op, msg: format!("{what} needs {n} elements, tensor {:?} has {}", t.shape, t.numel()) });
    }
    Ok(())
}

/// Dropout probability -> the u32 threshold the kernels compare the RNG against, and 1/(1-p).
pub fn dropout_threshold(p: f32) -> (u32, f32) {
    if p <= 0.0 {
        return (0, 1.0);
    }
    let t = ((p as f64) * 4294967296.0).min(4294967295.0) as u32;
    (t.max(1), 1.0 / (1.0 - p))
}

/// CPU mirror of common.wgsl's counter RNG (bit-exact).
pub mod rng {
    pub fn hash_u32(x: u32) -> u32 {
        let mut v = x;
        v ^= v >> 16;
        v = v.wrapping_mul(0x7feb352d);
        v ^= v >> 15;
        v = v.wrapping_mul(0x846ca68b);
        v ^= v >> 16;
        v
    }
    pub fn rng_u32(seed: u32, stream: u32, idx: u32) -> u32 {
        hash_u32(idx ^ hash_u32(stream ^ hash_u32(seed)))
    }
    pub fn keep(seed: u32, stream: u32, idx: u32, threshold: u32) -> bool {
        threshold == 0 || rng_u32(seed, stream, idx) >= threshold
    }
}

/// CPU GELU (erf form) and its derivative, in f64 for a reference tighter than the kernels.
pub fn gelu_cpu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}
pub fn gelu_grad_cpu(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + x * pdf) as f32
}

/// Every uniform struct in shaders/ against the `#[repr(C)]` Rust struct the launchers write into
/// it: same members in the same order, same names, byte offsets and scalar types, same size. The
/// two are written by hand side by side, and a mismatch is otherwise silent garbage on the GPU.
#[cfg(test)]
mod uniform_tests {
    use super::*;
    use naga::{AddressSpace, ScalarKind, TypeInner};

    /// (shader, WGSL struct name, the Rust layout the launchers bind to it)
    fn twins() -> Vec<(&'static str, &'static str, UniformLayout)> {
        vec![
            ("attention", "Params", attention::uniform_layout()),
            ("bce", "Params", bce::uniform_layout()),
            ("cache", "Params", cache::uniform_layout()),
            ("cross_entropy", "Params", cross_entropy::uniform_layout()),
            ("elementwise", "Params", elementwise::uniform_layout()), // also dropout's
            ("embedding", "Params", embedding::uniform_layout()),
            ("layernorm", "Params", layernorm::uniform_layout()),
            ("matmul", "Params", matmul::uniform_layout()),
            ("matmul_coop", "Params", matmul::uniform_layout()), // launched with matmul's Params
            ("optim", "Params", optim::uniform_layout()),
            ("reduce", "Params", reduce::uniform_layout()),
            ("rows", "Params", rows::uniform_layout()),
            ("softmax", "Params", softmax::uniform_layout()),
        ]
    }

    struct WgslStruct {
        name: String,
        size: usize,
        members: Vec<(String, usize, String)>,
    }

    /// The struct types of a shader's `var<uniform>` globals, as naga lays them out.
    fn wgsl_uniforms(shader: &str) -> Vec<WgslStruct> {
        let src = crate::gpu::shaders::full_source(shader).unwrap();
        let m = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{shader}.wgsl: {}", e.emit_to_string(&src)));
        let scalar = |ty: naga::Handle<naga::Type>| match &m.types[ty].inner {
            TypeInner::Scalar(s) => match (s.kind, s.width) {
                (ScalarKind::Uint, 4) => "u32".to_string(),
                (ScalarKind::Sint, 4) => "i32".to_string(),
                (ScalarKind::Float, 4) => "f32".to_string(),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        };
        let mut out = Vec::new();
        for (_, g) in m.global_variables.iter() {
            if g.space != AddressSpace::Uniform {
                continue;
            }
            let t = &m.types[g.ty];
            let TypeInner::Struct { members, span } = &t.inner else {
                panic!("{shader}.wgsl: uniform {:?} is not a struct", g.name);
            };
            out.push(WgslStruct {
                name: t.name.clone().unwrap_or_default(),
                size: *span as usize,
                members: members.iter().map(|mb| (mb.name.clone().unwrap_or_default(), mb.offset as usize, scalar(mb.ty))).collect(),
            });
        }
        out
    }

    /// Mismatches between a WGSL uniform struct and its Rust twin, one line each. A WGSL member
    /// named `_…` is padding the shader does not read: its Rust twin may have any name (the
    /// cooperative-matrix matmul has no split-K, so `k_chunk`/`splits` are `_p0`/`_p1` there).
    fn mismatches(w: &WgslStruct, r: &UniformLayout) -> Vec<String> {
        let mut e = Vec::new();
        if w.size != r.size {
            e.push(format!("size: WGSL {} bytes, Rust {}", w.size, r.size));
        }
        if w.members.len() != r.fields.len() {
            e.push(format!("WGSL has {} members, Rust lists {}", w.members.len(), r.fields.len()));
        }
        for ((wn, wo, wt), &(rn, ro, rt)) in w.members.iter().zip(&r.fields) {
            if wn != rn && !wn.starts_with('_') {
                e.push(format!("member '{wn}' at WGSL offset {wo} is Rust field '{rn}'"));
            }
            if *wo != ro {
                e.push(format!("'{wn}': WGSL offset {wo}, Rust '{rn}' offset {ro}"));
            }
            if wt != rt {
                e.push(format!("'{wn}': WGSL type {wt}, Rust '{rn}' {rt}"));
            }
        }
        e
    }

    #[test]
    fn every_wgsl_uniform_struct_matches_its_rust_twin() {
        let twins = twins();
        let mut checked = 0;
        let mut errors = Vec::new();
        for (shader, _) in crate::gpu::shaders::ALL {
            for w in wgsl_uniforms(shader) {
                let Some((_, _, r)) = twins.iter().find(|t| t.0 == *shader && t.1 == w.name) else {
                    errors.push(format!("{shader}.wgsl: uniform struct {} has no Rust twin listed in ops::uniform_tests::twins", w.name));
                    continue;
                };
                errors.extend(mismatches(&w, r).into_iter().map(|m| format!("{shader}.wgsl {}: {m}", w.name)));
                checked += 1;
            }
        }
        assert!(errors.is_empty(), "uniform structs differ from their Rust twins:\n{}", errors.join("\n"));
        assert_eq!(checked, twins.len(), "a twin listed here matches no uniform struct in its shader");
    }

    #[test]
    fn the_comparison_catches_a_moved_renamed_or_retyped_field() {
        let w = wgsl_uniforms("attention").into_iter().next().unwrap();
        assert!(mismatches(&w, &attention::uniform_layout()).is_empty());
        let changed = |f: &dyn Fn(&mut UniformLayout)| {
            let mut r = attention::uniform_layout();
            f(&mut r);
            mismatches(&w, &r)
        };
        assert!(!changed(&|r| r.fields[5].1 += 4).is_empty(), "moved field");
        assert!(!changed(&|r| r.fields[5].0 = "other").is_empty(), "renamed field");
        assert!(!changed(&|r| r.fields[12].2 = "u32").is_empty(), "retyped field");
        assert!(!changed(&|r| r.size += 16).is_empty(), "size");
        assert!(
            !changed(&|r| {
                r.fields.pop();
            })
            .is_empty(),
            "missing field"
        );
    }
}
