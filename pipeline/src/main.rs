fn main() -> std::process::ExitCode {
    tidemark::cli::main()
}
