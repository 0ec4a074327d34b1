//! The WGSL sources, compiled into the binary. Every file gets `common.wgsl` prepended (WGSL has no
//! include); a test validates each assembled source with naga.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

pub const ALL: &[(&str, &str)] = &[
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("layernorm", include_str!("../../shaders/layernorm.wgsl")),
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("embedding", include_str!("../../shaders/embedding.wgsl")),
    ("cross_entropy", include_str!("../../shaders/cross_entropy.wgsl")),
    ("bce", include_str!("../../shaders/bce.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("rows", include_str!("../../shaders/rows.wgsl")),
    ("cache", include_str!("../../shaders/cache.wgsl")),
    // needs SHADER_F16 + EXPERIMENTAL_COOPERATIVE_MATRIX: compiled only where the adapter has them
    ("matmul_coop", include_str!("../../shaders/matmul_coop.wgsl")),
];

/// The file with `common.wgsl` prepended; its `enable` directives stay first, as WGSL requires.
pub fn full_source(name: &str) -> Option<String> {
    let src = ALL.iter().find(|(n, _)| *n == name)?.1;
    let (enables, body): (Vec<&str>, Vec<&str>) = src.lines().partition(|l| l.starts_with("enable "));
    Some(format!("{}\n{COMMON}\n{}", enables.join("\n"), body.join("\n")))
}
