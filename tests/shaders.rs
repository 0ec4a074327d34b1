//! Every WGSL file, as the runtime assembles it (common.wgsl prepended), parses and validates with naga.
use vlp_engine::gpu::shaders;

#[test]
fn every_shader_parses_and_validates() {
    let mut checked = 0;
    for (name, _) in shaders::ALL {
        let src = shaders::full_source(name).unwrap();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&src)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        v.validate(&module).unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(&src)));
        assert!(module.entry_points.len() >= 1, "{name}.wgsl has no entry point");
        checked += 1;
    }
    // Every file in shaders/ is registered (a new file that is never compiled would rot).
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().map_or(false, |x| x == "wgsl"))
        .count();
    assert_eq!(on_disk, checked + 1, "shaders/ has files not listed in gpu::shaders::ALL (common.wgsl excepted)");
}
