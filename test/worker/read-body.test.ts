/** readBodyCapped on real Node streams: every way a body can end settles the read once, with the right answer. */
import { Readable } from 'node:stream';

import { describe, expect, it } from 'vitest';

import { ResponseTooLargeError } from '../../src/core/errors.ts';
import { readBodyCapped } from '../../src/worker/http/response.ts';

function streamOf(chunks: readonly string[]): Readable {
  return Readable.from(chunks.map((chunk) => Buffer.from(chunk)));
}

describe('readBodyCapped', () => {
  it('joins the chunks of a body that ends normally', async () => {
    const body = streamOf(['{"a":', '1}']);
    const closed = new Promise((resolve) => body.once('close', resolve));
    await expect(readBodyCapped(body, {}, 1024, 200)).resolves.toEqual(Buffer.from('{"a":1}'));
    // The 'close' that follows every 'end' runs its handler inside this test: a throw there would fail it.
    await closed;
  });

  it('refuses a declared length over the cap before reading, and stops the body', async () => {
    const body = streamOf(['x'.repeat(10)]);
    await expect(readBodyCapped(body, { 'content-length': '2048' }, 1024, 200)).rejects.toBeInstanceOf(
      ResponseTooLargeError,
    );
    expect(body.destroyed).toBe(true);
  });

  it('stops a body that grows past the cap', async () => {
    const body = streamOf(['x'.repeat(600), 'x'.repeat(600), 'x'.repeat(600)]);
    const error: unknown = await readBodyCapped(body, {}, 1024, 200).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResponseTooLargeError);
    expect((error as ResponseTooLargeError).status).toBe(200);
    expect(body.destroyed).toBe(true);
  });

  it('rejects a body closed before its end without an error', async () => {
    const body = new Readable({ read() {} });
    const read = readBodyCapped(body, {}, 1024, 200);
    body.push(Buffer.from('part'));
    body.destroy();
    await expect(read).rejects.toThrow('the response body ended early');
  });

  it('rejects with the stream error', async () => {
    const body = new Readable({ read() {} });
    const read = readBodyCapped(body, {}, 1024, 200);
    body.destroy(new Error('socket hang up'));
    await expect(read).rejects.toThrow('socket hang up');
  });
});
