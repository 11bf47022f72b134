fn main() -> std::process::ExitCode {
    ringscale_loadtest::main()
}
