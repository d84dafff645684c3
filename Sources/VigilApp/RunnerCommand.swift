import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

enum RunnerCommand {
    static let command = Command(
        name: "runner",
        summary: "run the runner (watchdog + missions); normally via scripts/vigil-run",
        help: """
        usage: vigil runner [--state-dir DIR] [TUNABLES] [--clear-stop]

        Runs the runner in the foreground: every tick it probes the bridge and heals it in
        escalating tiers, and it runs missions. Exits 42 when it should be relaunched (its
        restart marker, or its program on disk changed), 0 when stopped (`vigil stop`,
        SIGTERM, SIGINT), 4 when its state directory was removed or replaced under it (it
        stops the bridge first; the wrapper does not relaunch). Normally started by
        scripts/vigil-run, which relaunches it; a runner whose wrapper is gone does not exit 42
        (it journals runner-restart-skipped and goes on).

        Tunables (flags, or the same keys in DIR/vigil.json; durations as 0.2, 200ms, 2s, 5m):
          --tick D                runner loop period (probe cadence)            1s
          --heartbeat-interval D  bridge heartbeat period                       1s
          --stale-after D         heartbeat age that makes a live bridge hung   20s
          --cooldown D            time a tier gets to heal before the next      10s
          --term-grace D          SIGTERM → SIGKILL wait                        5s
          --start-grace D         time a respawned bridge gets to beat          10s
          --circuit-limit N       failed respawns in a row that open the circuit 3
          --circuit-cooloff D     open → half-open retry                        10m
          --stable-after D        healthy time that proves a respawn            3 × cooldown
          --circuit-reminder D    how often an open circuit is announced again  1h
          --rss-limit SIZE        RSS that makes the bridge bloated (512MB)     off
          --max-parallel N        missions run at once                          1
          --mission-output-cap SIZE output kept per mission (the newest bytes)  64MiB
          --journal-max-bytes SIZE journal size that rotates it (journal.jsonl.1…) 16MiB
          --journal-keep N        rotated journal files kept (1 to 20)          3
          "mission-env": [NAME…]  (vigil.json only) variables passed on to missions
          "metrics": {"listen": "127.0.0.1:9464"}  (vigil.json only) serve GET /metrics there
                                  (a non-loopback address needs "allow_remote": true)
          --version-file PATH     the version is this file's contents
          --version-command CMD   the version is this command's output (argv split on spaces)
          --clear-stop            forget an earlier `vigil stop` (the wrapper passes it once)
        """,
        run: { inv in
            let args = try Arguments(inv.arguments, valued: Tunables.flagNames, booleans: ["clear-stop"])
            guard args.positional.isEmpty else { throw UsageError("unexpected argument \(args.positional[0])") }
            let config = try Configuration.load(stateDir: inv.stateDir, arguments: args)
            do { _ = try ChatConfig.load(configFile: inv.stateDir.config) } catch {
                throw CommandError("\(error)", code: 2)
            }
            CodePages.oneHeap()
            let code = try Runner(invocation: inv, config: config, clearStop: args.has("clear-stop")).run()
            if code != 0 { throw ExitCode(code) }
        })
}
