import ArgumentParser

// Top-level entry (not @main, so that subcommands can live in their own files of this module).
// The generic function makes the compiler pick AsyncParsableCommand's async `main`.
func runRoot<Command: AsyncParsableCommand>(_ command: Command.Type) async { await command.main(nil) }
await runRoot(SMGCtl.self)
