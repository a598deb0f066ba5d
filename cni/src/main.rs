//! `mesh-cni`: one binary, four roles. With `CNI_COMMAND` set it is the chained CNI
//! plugin; otherwise the first argument picks `redirect` (istio-init), `validate`
//! (istio-validation) or `install` (the node DaemonSet).

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: mesh-cni redirect [istio-iptables flags] | mesh-cni validate [flags] | mesh-cni install [flags]\n\
         (run with CNI_COMMAND set to act as the CNI plugin)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_some() {
        return mesh_cni::plugin::main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    match cmd.as_str() {
        "redirect" => mesh_cni::redirect::main(rest),
        "validate" => mesh_cni::validate::main(rest),
        "install" => mesh_cni::install::main(rest),
        _ => usage(),
    }
}
