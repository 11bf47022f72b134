fn main() -> std::process::ExitCode {
    ringscale::cli::main()
}
