use super::*;

fn json(version: &str, extra_device: &str) -> String {
    format!(
        r#"{{"cdiVersion":"{version}","kind":"vendor.example/gpu",
            "devices":[{{"name":"gpu0","containerEdits":{{"deviceNodes":[{{"path":"/dev/vgpu0"{extra_device}}}]}}}}],
            "containerEdits":{{"env":["VENDOR_DRIVER=1"],
                "mounts":[{{"hostPath":"/usr/lib/libv.so.1","containerPath":"/usr/lib/libv.so.1","options":["ro","bind"]}}],
                "hooks":[{{"hookName":"createContainer","path":"/usr/bin/vendor-hook","args":["vendor-hook","x"],"timeout":5}}]}}}}"#
    )
}

fn yaml(version: &str) -> String {
    format!(
        "cdiVersion: \"{version}\"\nkind: vendor.example/gpu\ndevices:\n  - name: gpu0\n    containerEdits:\n      deviceNodes:\n        - path: /dev/vgpu0\n          permissions: rw\ncontainerEdits:\n  env:\n    - VENDOR_DRIVER=1\n  mounts:\n    - hostPath: /usr/lib/libv.so.1\n      containerPath: /usr/lib/libv.so.1\n      options: [ro, bind]\n  hooks:\n    - hookName: createContainer\n        \n      path: /usr/bin/vendor-hook\n"
    )
    .replace("\n        \n", "\n")
}

fn err(path: &str, text: &str) -> String {
    parse(Path::new(path), text).unwrap_err().to_string()
}

#[test]
fn every_supported_version_parses_in_json_and_yaml() {
    for v in [
        "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "0.5.1",
    ] {
        let j = parse(Path::new("/etc/cdi/v.json"), &json(v, "")).unwrap();
        assert_eq!(j.kind, "vendor.example/gpu");
        assert_eq!(
            j.devices[0].container_edits.device_nodes[0].path,
            "/dev/vgpu0"
        );
        assert_eq!(j.container_edits.hooks[0].timeout, Some(5));
        for ext in ["yaml", "yml"] {
            let y = parse(Path::new(&format!("/etc/cdi/v.{ext}")), &yaml(v)).unwrap();
            assert_eq!(y.devices[0].name, "gpu0");
            assert_eq!(
                y.devices[0].container_edits.device_nodes[0]
                    .permissions
                    .as_deref(),
                Some("rw")
            );
            assert_eq!(y.container_edits.mounts[0].options, ["ro", "bind"]);
            assert_eq!(y.container_edits.hooks[0].hook_name, "createContainer");
        }
    }
}

#[test]
fn newer_fields_need_their_version() {
    // hostPath came with 0.5.0.
    let e = err("/etc/cdi/a.json", &json("0.4.0", r#","hostPath":"/dev/x""#));
    assert_eq!(
        e,
        "CDI spec /etc/cdi/a.json: field devices[0].containerEdits.deviceNodes[0].hostPath: needs cdiVersion 0.5.0 or later (the file says 0.4.0)"
    );
    parse(
        Path::new("a.json"),
        &json("0.5.0", r#","hostPath":"/dev/x""#),
    )
    .unwrap();
    // Mount types with 0.4.0; annotations with 0.6.0; additionalGids and intelRdt with 0.7.0.
    let t = json("0.3.0", "").replace(r#""options":["ro","bind"]"#, r#""type":"bind""#);
    assert!(err("a.json", &t).contains("containerEdits.mounts[0].type: needs cdiVersion 0.4.0"));
    let t = json("0.5.0", "").replace(
        r#""name":"gpu0","#,
        r#""name":"gpu0","annotations":{"a":"b"},"#,
    );
    assert!(err("a.json", &t).contains("field devices[0].annotations: needs cdiVersion 0.6.0"));
    let t = json("0.6.0", "").replace(r#""env":"#, r#""additionalGids":[44],"env":"#);
    assert!(
        err("a.json", &t).contains("field containerEdits.additionalGids: needs cdiVersion 0.7.0")
    );
    let t = json("0.7.0", "").replace(
        r#""env":"#,
        r#""additionalGids":[44],"intelRdt":{"closID":"c"},"env":"#,
    );
    let s = parse(Path::new("a.json"), &t).unwrap();
    assert_eq!(s.container_edits.additional_gids, [44]);
    // A name starting with a digit: 0.5.0.
    let t = json("0.4.0", "").replace(r#""name":"gpu0""#, r#""name":"0""#);
    assert!(err("a.json", &t).contains("devices[0].name: needs cdiVersion 0.5.0"));
}

#[test]
fn bad_specs_name_the_file_and_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#""cdiVersion":"0.8.0""#, r#""cdiVersion":"0.9.0""#),
        (r#""kind":"vendor.example/gpu""#, r#""kind":"gpu""#),
        (r#""path":"/dev/vgpu0""#, r#""path":"dev/vgpu0""#),
        (r#""hookName":"createContainer""#, r#""hookName":"onStart""#),
        (r#""timeout":5"#, r#""timeout":0"#),
        (r#""VENDOR_DRIVER=1""#, r#""VENDOR_DRIVER""#),
        (
            r#""containerPath":"/usr/lib/libv.so.1""#,
            r#""containerPath":"usr""#,
        ),
        (r#""name":"gpu0""#, r#""name":"-gpu""#),
    ];
    let fields = [
        "field cdiVersion: '0.9.0' is not a version egret reads",
        "field kind: 'gpu' is not VENDOR/CLASS",
        "field devices[0].containerEdits.deviceNodes[0].path: 'dev/vgpu0' must be an absolute path",
        "field containerEdits.hooks[0].hookName: 'onStart' is not an OCI hook stage",
        "field containerEdits.hooks[0].timeout: must be greater than zero",
        "field containerEdits.env[0]: 'VENDOR_DRIVER' is not NAME=VALUE",
        "field containerEdits.mounts[0].containerPath: 'usr' must be an absolute path",
        "field devices[0].name: '-gpu' must be alphanumerics",
    ];
    for ((from, to), want) in cases.iter().zip(fields) {
        let text = json("0.8.0", "").replace(from, to);
        let e = err("/etc/cdi/bad.json", &text);
        assert!(e.starts_with("CDI spec /etc/cdi/bad.json: "), "{e}");
        assert!(e.contains(want), "{e} (wanted {want})");
        assert!(!e.contains('\n'), "{e}");
    }
    // Unknown and missing fields, in JSON and YAML: one line with the file and the field.
    let e = err("/etc/cdi/u.json", &json("0.8.0", r#","majr":3"#));
    assert!(
        e.contains("/etc/cdi/u.json") && e.contains("unknown field `majr`"),
        "{e}"
    );
    let e = err(
        "/etc/cdi/u.yaml",
        &yaml("0.8.0").replace("deviceNodes", "devicenodes"),
    );
    assert!(
        e.contains("/etc/cdi/u.yaml") && e.contains("devicenodes"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let e = err("/etc/cdi/m.yaml", "cdiVersion: 0.6.0\ndevices: []\n");
    assert!(e.contains("missing field `kind`"), "{e}");
    let e = err(
        "/etc/cdi/n.json",
        r#"{"cdiVersion":"0.6.0","kind":"a.b/c","devices":[]}"#,
    );
    assert!(
        e.contains("field devices: a spec must define at least one device"),
        "{e}"
    );
    let two = json("0.8.0", "").replace(
        r#""devices":[{"name":"gpu0","containerEdits":{"deviceNodes":[{"path":"/dev/vgpu0"}]}}]"#,
        r#""devices":[{"name":"a"},{"name":"a"}]"#,
    );
    assert!(err("t.json", &two).contains("devices[1].name: device 'a' is defined twice"));
    let e = err("/etc/cdi/g.json", "{not json");
    assert!(e.starts_with("CDI spec /etc/cdi/g.json: "), "{e}");
}

#[test]
fn names_and_kinds() {
    assert_eq!(check_kind("nvidia.com/gpu").unwrap(), ("nvidia.com", "gpu"));
    assert!(check_kind("vendor.com/foo/bar").is_err());
    assert!(check_kind("/gpu").is_err());
    assert!(check_kind("foo").is_err());
    assert_eq!(
        split_qualified("nvidia.com/gpu=0"),
        Some(("nvidia.com/gpu", "0"))
    );
    assert_eq!(
        split_qualified("amd.com/gpu=all"),
        Some(("amd.com/gpu", "all"))
    );
    assert_eq!(split_qualified("nvidia.com/gpu="), None);
    assert_eq!(split_qualified("/dev/x=1"), None);
}
