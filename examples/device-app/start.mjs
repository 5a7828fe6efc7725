// Entry point of the example device app. It checks the Node version BEFORE importing
// anything that needs Node >= 22 (node-seal, the SDK), so an old Node gets a clear
// message instead of an import error, then loads device.ts through tsx.
//   node examples/device-app/start.mjs --help
const [major] = process.versions.node.split('.').map(Number);
if (!(major >= 22)) {
  process.stderr.write(`veil device app: needs Node >= 22 (this is Node ${process.versions.node}); run it with scripts/node24.sh or a newer Node\n`);
  process.exit(1);
}
const { register } = await import('tsx/esm/api');
register();
await import('./device.ts');
