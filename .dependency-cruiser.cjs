// .dependency-cruiser.cjs — the layering rules `npm run lint` enforces on src/.
// Layer order, nothing imports upward:
//   src/sys → src/vhost-user → src/vmpi → src/dif → src/ops → src/cli.ts (and src/cli/)
// plus: no circular imports inside src/.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'sys-is-the-bottom',
      severity: 'error',
      comment: 'src/sys/ holds low-level helpers every layer uses: it imports no other layer of src/.',
      from: { path: '^src/sys/' },
      to: { path: '^src/(vhost-user|vmpi|dif|ops|cli)(/|\\.ts$)' },
    },
    {
      name: 'vhost-user-knows-no-vmpi-dif-ops',
      severity: 'error',
      comment: 'src/vhost-user/ is the generic vhost-user back-end: it knows no VMPI, DIF or ops code.',
      from: { path: '^src/vhost-user/' },
      to: { path: '^src/(vmpi|dif|ops|cli)(/|\\.ts$)' },
    },
    {
      name: 'vmpi-knows-no-dif-ops',
      severity: 'error',
      comment: 'src/vmpi/ is the VMPI device and ports: it knows no DIF or ops code.',
      from: { path: '^src/vmpi/' },
      to: { path: '^src/(dif|ops|cli)(/|\\.ts$)' },
    },
    {
      name: 'dif-knows-no-ops-cli',
      severity: 'error',
      comment: 'src/dif/ (core, shim-hv, normal, ipc, apps) does not import the ops layer or the CLI.',
      from: { path: '^src/dif/' },
      to: { path: '^src/(ops|cli)(/|\\.ts$)' },
    },
    {
      name: 'ops-knows-no-cli',
      severity: 'error',
      comment: 'src/ops/ is driven by the CLI, never the other way round.',
      from: { path: '^src/ops/' },
      to: { path: '^src/cli(/|\\.ts$)' },
    },
    {
      name: 'src-knows-no-tests',
      severity: 'error',
      comment: 'Shipped code never imports tests, benchmarks or scripts.',
      from: { path: '^src/' },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles inside src/: split the shared part into its own module instead.',
      from: { path: '^src/' },
      to: { circular: true, path: '^src/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing is a typo or a missing dependency.',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|build|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      extensions: ['.ts', '.js', '.json', '.node'],
      conditionNames: ['import', 'require', 'node', 'default'],
    },
    reporterOptions: { text: { highlightFocused: true } },
  },
};
