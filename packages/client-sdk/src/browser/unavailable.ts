/** The browser build's stand-in for node:fs, node:path, node:module and node:url: used only by file-based code paths. */
const unavailable = (name: string) => (): never => {
  throw new Error(`${name} is not available in a browser`);
};
export const readFile = unavailable('readFile');
export const writeFile = unavailable('writeFile');
export const mkdir = unavailable('mkdir');
export const readdir = unavailable('readdir');
export const stat = unavailable('stat');
export const rename = unavailable('rename');
export const open = unavailable('open');
export const rm = unavailable('rm');
export const join = unavailable('path.join');
export const dirname = unavailable('path.dirname');
export const resolve = unavailable('path.resolve');
export const sep = '/';
export const findPackageJSON = unavailable('findPackageJSON');
export const createRequire = unavailable('createRequire');
export const pathToFileURL = unavailable('pathToFileURL');
export const fileURLToPath = unavailable('fileURLToPath');
export default {};
