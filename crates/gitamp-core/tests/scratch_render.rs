// TEMPORARY: builds a Catalog from example-repo without catalog::load (not yet landed).
use gitamp_core::catalog::model::*;
use gitamp_core::catalog::{Catalog, load::parse_file};
use gitamp_core::{Diagnostics, render};

fn load_dir(root: &std::path::Path) -> (Catalog, Diagnostics) {
    let mut cat = Catalog::default();
    let mut d = Diagnostics::default();
    for dir in ["types", "sources", "processors", "destinations", "configurations"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            let rel = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            for doc in parse_file(&rel, &std::fs::read(&p).unwrap(), &mut d) {
                let v = &doc.value;
                let kind = Kind::parse(v["kind"].as_str().unwrap()).unwrap();
                let md: Metadata = serde_json::from_value(v["metadata"].clone()).unwrap();
                match kind {
                    Kind::SourceType | Kind::ProcessorType | Kind::DestinationType => {
                        let role = kind.role().unwrap();
                        let spec: TypeSpec = serde_json::from_value(v["spec"].clone()).unwrap();
                        cat.types.insert((role, md.name.clone()), ResourceType { role, metadata: md, spec, origin: doc.origin.clone() });
                    }
                    Kind::Configuration => {
                        let spec: ConfigurationSpec = serde_json::from_value(v["spec"].clone()).unwrap();
                        for (role, list, ptr) in [(Role::Source, &spec.sources, "sources"), (Role::Destination, &spec.destinations, "destinations")] {
                            for (i, r) in list.iter().enumerate() {
                                if let ComponentRef::Entry(e) = r { if let Some(t) = &e.type_name {
                                    cat.resources.insert((role, e.name.clone()), Resource { role, metadata: Metadata { name: e.name.clone(), ..Default::default() }, spec: ResourceSpec { type_name: t.clone(), parameters: e.parameters.clone() }, origin: doc.origin.clone(), spec_pointer: format!("/spec/{ptr}/{i}"), inline_in: Some(md.name.clone()) });
                                }}
                            }
                        }
                        cat.configurations.insert(md.name.clone(), Configuration { metadata: md, spec, origin: doc.origin.clone() });
                    }
                    _ => {
                        let role = kind.role().unwrap();
                        let spec: ResourceSpec = serde_json::from_value(v["spec"].clone()).unwrap();
                        cat.resources.insert((role, md.name.clone()), Resource { role, metadata: md, spec, origin: doc.origin.clone(), spec_pointer: "/spec".into(), inline_in: None });
                    }
                }
            }
        }
    }
    (cat, d)
}

#[test]
fn corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    let mut dirs: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs {
        let (cat, d) = load_dir(&dir.join("repo"));
        let (_, mut diags) = render::render(&cat);
        diags.extend(d);
        diags.sort();
        println!("## {}", dir.display());
        for x in diags.iter() { println!("{} {}:{}    # {}", x.code, x.location.file, x.location.line, x.message); }
    }
}

#[test]
fn scratch() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../example-repo");
    let (cat, d) = load_dir(&root);
    assert!(d.is_empty(), "{d}");
    let (out, diags) = render::render(&cat);
    println!("{diags}");
    let dir = root.join("../tests/golden");
    if std::env::var_os("SCRATCH_WRITE").is_none() { return; }
    std::fs::create_dir_all(&dir).unwrap();
    for (n, c) in &out.configurations {
        println!("=== {n} {}", c.hash);
        std::fs::write(dir.join(format!("{n}.yaml")), &c.yaml).unwrap();
    }
}

#[test]
fn timing() {
    let Some(dir) = std::env::var_os("SCRATCH_DIR") else { return };
    let t = std::time::Instant::now();
    let (cat, d) = load_dir(std::path::Path::new(&dir));
    println!("scratch load {:?} ({} diags)", t.elapsed(), d.len());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let (out, diags) = render::render(&cat);
        println!("render {:?}: {} configurations, {} diags", t.elapsed(), out.configurations.len(), diags.len());
        for x in diags.iter().take(5) { println!("{x}"); }
    }
}
