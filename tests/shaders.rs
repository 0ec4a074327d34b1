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
        let info = v.validate(&module).unwrap();
        assert!(module.entry_points.len() >= 1, "{name}.wgsl has no entry point");
        // Vulkan gets SPIR-V from naga's writer; run it here too, since kernels that only compile
        // on hardware we lack (cooperative matrices) would otherwise meet it first on a user's GPU.
        let opts = naga::back::spv::Options { lang_version: (1, 6), ..Default::default() };
        for ep in &module.entry_points {
            let pl = naga::back::spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
            // overrides keep their defaults (the launchers' other values take the same code paths)
            let (m, i) = naga::back::pipeline_constants::process_overrides(&module, &info, Some((ep.stage, &ep.name)), &Default::default())
                .unwrap_or_else(|e| panic!("{name}.wgsl {}: overrides: {e}", ep.name));
            let words = naga::back::spv::write_vec(&m, &i, &opts, Some(&pl)).unwrap_or_else(|e| panic!("{name}.wgsl {}: SPIR-V: {e}", ep.name));
            // VLP_DUMP_SPV=dir keeps the binaries for spirv-val / spirv-dis
            if let Ok(dir) = std::env::var("VLP_DUMP_SPV") {
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                std::fs::write(format!("{dir}/{name}.{}.spv", ep.name), bytes).unwrap();
            }
        }
        checked += 1;
    }
    // Every file in shaders/ is registered (a new file that is never compiled would rot).
    let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().map_or(false, |x| x == "wgsl"))
        .count();
    assert_eq!(on_disk, checked + 1, "shaders/ has files not listed in gpu::shaders::ALL (common.wgsl excepted)");
}
