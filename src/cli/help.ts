/**
 * cli/help.ts — the `vmpi` help texts (vmpi --help, vmpi <command> --help) and printing them.
 */
import { ECHO_CHANNEL_MIN, LOG_LEVELS } from '../ops/config.js';
import { MAX_CHANNEL } from '../vmpi/port.js';
import { MAX_SDU_LOG2, MIN_SDU_LOG2 } from '../vmpi/carrier.js';
import { DEFAULT_IPC_SOCKET } from '../dif/ipc/protocol.js';
import { DEFAULT_TGEN_APP } from '../dif/tgen.js';

const HELP: Record<string, string> = {
  main: `vmpi — vhost-user VMPI back-end (RINA shim DIF for hypervisors)

Usage: vmpi <command> [options]

Commands:
  serve          serve VMPI devices to QEMU over vhost-user sockets
  guest          inside a VM: the shim DIF over /dev/vmpiN and the IPC daemon for applications
  check-config   validate a configuration file
  qemu-args      print the QEMU arguments that attach a VM to a device's socket
  tgen           traffic generator over the IPC API (like rina-tgen): server, client, sweep, plot
  ipcp list      the IPC processes a running serve/guest hosts (DIF, type, name, address)
  dif show NAME  a look inside one DIF's IPC process: neighbours, tables, directory, flows
  top            live view of a running serve: devices, DIFs and flows with their rates

Options:
  -h, --help     show help (also: vmpi <command> --help)
  -V, --version  print the version
`,
  serve: `Usage: vmpi serve [--config FILE] [--socket PATH [--vmpi-id N]] ... [options]

Serves one VMPI device per --socket, per device in the config file, and per inherited listening
socket. The n-th --vmpi-id belongs to the n-th --socket (then to the inherited sockets); devices
without one get the lowest free VMPI-id. Flags add to the config file: their devices come after
the file's, and their settings override the file's. SIGTERM or SIGINT: close every device, remove
the socket files, exit 0.

Restarts keep the VMs (--restart): by default this process becomes a small keeper that holds
every fd the VMs need and runs the serving worker as its child; a worker that dies is replaced at
once and resumes every VM's device. SIGHUP: upgrade (the code on disk is asked whether it can
read the running state, then takes over). Under systemd (NOTIFY_SOCKET set) the unit's fd store
holds the fds instead, and SIGTERM hands over rather than closing the devices.

Options:
  --config FILE          YAML (.yaml/.yml) or JSON (.json) configuration (see vmpi check-config)
  --socket PATH          vhost-user socket to create (repeatable; also --socket-path PATH)
  --vmpi-id N            VMPI-id of the corresponding device, 1..65535 (repeatable)
  --listen-fd N          serve a device on an inherited listening socket (also --fd N). Without it, systemd
                         socket activation is automatic: LISTEN_FDS sockets from fd 3 when
                         LISTEN_PID is this process (the .service unit needs NonBlocking=yes)
  --max-sdu-log2 N       largest SDU of the flag devices as a power of two, ${MIN_SDU_LOG2}..${MAX_SDU_LOG2} (default 16 = 64 KiB)
  --echo-channel N       echo every SDU the guest sends on channel N back to it (a test instrument
                         for vmpi-perf loop/stream; repeatable; flag devices only), N ${ECHO_CHANNEL_MIN}..${MAX_CHANNEL}
                         (below is the shim DIF's: control channel 0, flows 1..${ECHO_CHANNEL_MIN - 1})
  --metrics-listen ADDR  Prometheus endpoint HOST:PORT (default 127.0.0.1:19464; port 0 = any)
  --no-metrics           no metrics endpoint
  --ipc-socket PATH      IPC daemon socket for applications (default ${DEFAULT_IPC_SOCKET}; when
                         the default cannot be created, serving goes on without it)
  --no-ipc               no IPC daemon
  --restart MODE         auto (default: systemd under a notify unit, else keeper), keeper,
                         systemd, or off (a restart drops every device); also $VMPI_RESTART
  --pid-file PATH        write the pid to signal (the keeper's) to PATH
  --log-level LEVEL      ${LOG_LEVELS.join('|')} (default info)
  --log-format FORMAT    json (default), text, or journal (priority prefixes for journald; the
                         default when stderr is the journal, i.e. under systemd)
  --print-capabilities   print the back-end's capabilities as JSON and exit (QEMU's vhost-user
                         back-end conventions; \`vmpi --socket-path PATH\` and \`vmpi --fd N\`
                         serve directly, as such back-ends do)
`,
  'check-config': `Usage: vmpi check-config FILE
       vmpi check-config --schema

Validates a configuration file (YAML or JSON, by extension) and exits 0 when it is valid, 1 when
it is not (every problem is listed on stderr, one per line, with the field path and the bad
value), 2 on a usage error. Owner and group names are looked up on this host.

Options:
  --schema   print the configuration's JSON Schema and exit
`,
  guest: `Usage: vmpi guest [--device /dev/vmpiN]... [--ipc-socket PATH] [--normal-dif NAME | --config FILE]
                  [--metrics-listen ADDR | --no-metrics] [--log-level LEVEL]

Run inside a VM whose VMPI guest driver is loaded: opens each VMPI device, runs the guest end of
the shim DIF for hypervisors on it (DIF hv.vmpi-<VMPI-id>) and the IPC daemon through which the
VM's applications (vmpi tgen, the client library) register, allocate flows and move SDUs. Each
flow's application gets the driver file of the flow's channel: its SDUs do not pass this daemon.

Options:
  --device PATH       a VMPI character device; repeatable (default: every /dev/vmpiN)
  --normal-dif NAME   also join the normal DIF NAME: enroll through the first device's shim DIF
                      to its enroller on the host (vmpi serve with normal: { dif: NAME })
  --config FILE       take the normal DIF from FILE's normal section (see vmpi check-config)
  --ipc-socket PATH   the IPC daemon's socket (default ${DEFAULT_IPC_SOCKET}, or $VMPI_IPC_SOCKET)
  --metrics-listen ADDR  Prometheus endpoint HOST:PORT (default 127.0.0.1:19464; port 0 = any);
                      the same metrics go to the host through the VMPI (application vmpi-metrics)
  --no-metrics        neither (no endpoint, vmpi-metrics not registered)
  --log-level LEVEL   fatal, error, warn, info (default), debug, trace
  --log-format FORMAT json (default), text, or journal (the default under systemd)
  -h, --help          show this help

Stops on SIGINT/SIGTERM. Exit codes: 0 stopped, 1 runtime error (no device, socket in use), 2 usage.
`,
  tgen: `Usage: vmpi tgen server [--dif NAME] [--app NAME] [--ipc-socket PATH]
       vmpi tgen client [--dif NAME] [--app NAME] [--src NAME] [--ipc-socket PATH]
                        [--size BYTES] [--duration SECONDS | --count N] [--unreliable]
       vmpi tgen client --sweep [--sizes FROM:TO:STEP|LIST] [--repeats N] [--duration SECONDS]
                        [--csv FILE] [--svg FILE] [--label NAME] [--title TEXT] [...client options]
       vmpi tgen plot --svg FILE [--title TEXT] LABEL=FILE.csv ...

A traffic generator over the IPC API (like rina-tgen). The server registers an application name
in a DIF (through the IPC daemon of vmpi serve) and counts the SDUs and bytes of every flow; the
client allocates a flow to it and sends SDUs of one size as fast as the flow takes them. Goodput
is measured at the server and reported back to the client over the flow. --sweep repeats runs
over SDU sizes and prints, per size, the mean and 95% confidence interval (Student's t); --csv
writes size,mean_mbps,ci95_low,ci95_high,repeats and --svg a plot with error bars and a linear
fit. plot draws several such CSVs (e.g. one per system) in one SVG.

Options:
  --dif NAME          DIF to use (default: the daemon's only DIF)
  --app NAME          the server's application name (default ${DEFAULT_TGEN_APP})
  --src NAME          the client's application name (default rina-tgen-client/<pid>)
  --ipc-socket PATH   IPC daemon socket (default $VMPI_IPC_SOCKET or ${DEFAULT_IPC_SOCKET})
  --size BYTES        SDU size of a single run (default 1000)
  --duration SECONDS  length of one run (default 1)
  --count N           send exactly N SDUs instead (single run)
  --unreliable        ask for an unreliable, unordered flow (default reliable, in order)
  --sweep             run the sweep
  --sizes SPEC        sweep sizes, FROM:TO:STEP inclusive or a comma list (default 0:4000:250)
  --repeats N         runs per size (default 20)
  --csv FILE, --svg FILE, --label NAME (legend; default "vmpi shim-hv"), --title TEXT
`,
  ipcp: `Usage: vmpi ipcp list [--ipc-socket PATH] [--json]

Lists the IPC processes that a running vmpi serve or vmpi guest hosts, through its IPC daemon's
socket: DIF, type (shim-hv, shim-udp, shim-eth, normal), IPC process name and address in its DIF.

Options:
  --ipc-socket PATH   IPC daemon socket (default $VMPI_IPC_SOCKET or ${DEFAULT_IPC_SOCKET})
  --json              print the daemon's answer as JSON
  -h, --help          show this help

Exit codes: 0 ok, 1 the daemon cannot be reached, 2 usage.
`,
  dif: `Usage: vmpi dif show NAME [--ipc-socket PATH] [--json]

Prints the state of DIF NAME's IPC process in a running vmpi serve or vmpi guest (read-only,
through its IPC daemon's socket). A normal DIF: role, members (enroller), neighbours, lower (N-1)
flows, forwarding table, directory and flows. A shim DIF: VMPI-id, port up/down, registered
names, the channels in use and their flows. A shim DIF over UDP: its bound address, MTU,
keepalive, peers table, flows (ids at both ends, peer address) and drops by reason. Lists too long for one IPC message are cut, and the
dump says so.

Options:
  --ipc-socket PATH   IPC daemon socket (default $VMPI_IPC_SOCKET or ${DEFAULT_IPC_SOCKET})
  --json              print the IPC process's whole state as JSON
  -h, --help          show this help

Exit codes: 0 ok, 1 no such DIF (the message names those there) or the daemon cannot be reached, 2 usage.
`,
  top: `Usage: vmpi top [--url URL | --config FILE] [--ipc-socket PATH] [--interval SECONDS] [--once]

A terminal view of a running vmpi serve, for a person on the host (no Prometheus needed): one row
per VMPI device (VMPI-id, socket, state: up / connected / no VM, rx and tx SDU/s and Mb/s — rx is
from the guest, tx to the guest —, drops/s, rx-queue-full/s, backlog), one per DIF (its flows'
rates), one per flow (from the IPC daemon), and the server's version, uptime and restarts.
Rates are counter differences between two polls over the time between them; a counter that
went down (the server restarted without its state) shows "reset". It reads the server's metrics
endpoint (the same Prometheus scrapes) and its IPC daemon.

Keys: q (or Ctrl-C) quit, s cycle the device sort (id, rx, tx, drops). When the server stops
answering, the view says so and keeps retrying.

Options:
  --url URL           the metrics endpoint (default http://127.0.0.1:19464/metrics)
  --config FILE       take the endpoint from serve's configuration file (metrics.listen)
  --ipc-socket PATH   IPC daemon socket for the flows (default $VMPI_IPC_SOCKET or ${DEFAULT_IPC_SOCKET})
  --interval SECONDS  time between polls (default 1)
  --once              print one plain table (two polls an interval apart) and exit, for scripts
  --width N           width of the --once table (default: the terminal's, else 160)
  -h, --help          show this help

Exit codes: 0 ok, 1 the server cannot be reached (--once) or stdout is not a terminal (live), 2 usage.
`,
  'qemu-args': `Usage: vmpi qemu-args --socket PATH [--id NAME] [--mem SIZE]

Prints the QEMU 10 arguments (one per line) for a VM using the VMPI device on PATH.

Options:
  --socket PATH   the device's vhost-user socket
  --id NAME       chardev/device id (default vmpi0)
  --mem SIZE      guest RAM; vhost-user needs it shared (default 512M)
`,
};

/** Print the help of `topic` (a command, or "main") on stdout; exit code 0. */
export function help(topic: string): number {
  process.stdout.write(HELP[topic] ?? HELP.main!);
  return 0;
}
