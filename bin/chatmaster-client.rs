//! `chatmaster-client`: parses flags and runs the library's terminal
//! client on a single-threaded runtime.

use std::process::ExitCode;

use chatmaster::client::ui::{ClientArgs, Exit};
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let args = ClientArgs::parse();
    if let Some(shell) = args.completions {
        let mut command = ClientArgs::command();
        clap_complete::generate(
            shell,
            &mut command,
            "chatmaster-client",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmaster-client: cannot start the runtime: {e}");
            return ExitCode::from(Exit::LocalError.code());
        }
    };
    let exit = runtime.block_on(chatmaster::client::ui::run(args));
    ExitCode::from(exit.code())
}
