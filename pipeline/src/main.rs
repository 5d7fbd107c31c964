// mimalloc, as DataFusion's own CLI uses: glibc malloc took a quarter of the webhook
// worker's CPU (many small request/response allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tidemark::cli::main()
}
