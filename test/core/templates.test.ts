import { describe, expect, it } from 'vitest';

import { ConfigurationError, ValidationError } from '../../src/core/errors.ts';
import {
  compileTemplate,
  TemplateCompileError,
  type TemplateMode,
} from '../../src/core/services/templates.ts';
import type { TemplateContext } from '../../src/core/services/types.ts';

const SECRET_VALUE = 's3cr3t-do-not-print';

function context(
  overrides: Partial<Omit<TemplateContext, 'secrets'>> & { secrets?: Record<string, string> } = {},
) {
  return {
    input: overrides.input,
    secrets: new Map(Object.entries(overrides.secrets ?? { api_key: SECRET_VALUE, 'crm.region': 'eu' })),
    tenant: overrides.tenant,
    job: overrides.job ?? { id: 'job-1', idempotencyKey: 'order-42' },
  } satisfies TemplateContext;
}

function render(
  template: unknown,
  mode: TemplateMode,
  input: unknown,
  extra: Partial<TemplateContext> = {},
): unknown {
  return compileTemplate(template, mode, 'test.where', { input: true }).render({
    ...context({ input }),
    ...extra,
  });
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}

const INPUT = {
  n: 42,
  yes: true,
  nothing: null,
  name: 'Ada',
  obj: { a: 1 },
  items: ['zero', 'one'],
  deep: { a: { b: 'deep' } },
  '0': 'key zero',
};

describe('value mode: a single placeholder keeps its JSON type', () => {
  it.each([
    ['{{ input.n }}', 42],
    ['{{input.n}}', 42],
    ['{{    input.n  }}', 42],
    ['{{ input.yes }}', true],
    ['{{ input.nothing }}', null],
    ['{{ input.obj }}', { a: 1 }],
    ['{{ input.items }}', ['zero', 'one']],
    ['{{ input.items.1 }}', 'one'],
    ['{{ input.0 }}', 'key zero'],
    ['{{ input.deep.a.b }}', 'deep'],
    ['{{ input }}', INPUT],
    ['{{ input.missing }}', undefined],
    ['{{ input.deep.missing.b }}', undefined],
    ['{{ input.items.7 }}', undefined],
    ['{{ input.name.length }}', undefined],
    ['{{ input.constructor }}', undefined],
    ['{{ input.__proto__ }}', undefined],
    ['{{ tenant }}', 'acme'],
    ['{{ job.id }}', 'job-1'],
    ['{{ job.idempotencyKey }}', 'order-42'],
    ['{{ secrets.crm.region }}', 'eu'],
  ])('%s', (template, expected) => {
    expect(render(template, 'value', INPUT, { tenant: 'acme' })).toEqual(expected);
  });
});

describe('value mode: mixed strings render to a string', () => {
  it.each([
    ['n={{ input.n }}', 'n=42'],
    ['{{ input.name }}-{{ input.n }}', 'Ada-42'],
    ['yes={{ input.yes }}', 'yes=true'],
    ['obj={{ input.obj }}', 'obj={"a":1}'],
    ['null={{ input.nothing }}', 'null='],
    ['missing={{ input.missing }}', 'missing='],
    [' {{ input.n }} ', ' 42 '],
    ['no placeholders', 'no placeholders'],
    ['{ "single": "braces" }', '{ "single": "braces" }'],
  ])('%s → %s', (template, expected) => {
    expect(render(template, 'value', INPUT)).toBe(expected);
  });
});

describe('value mode: objects and arrays compile leaf by leaf', () => {
  const body = {
    email: '{{ input.email }}',
    source: 'ferry',
    count: 3,
    flag: false,
    none: null,
    nested: { tags: ['{{ input.tag }}', 1, '{{ input.missing }}'], key: 'k-{{ secrets.api_key }}' },
  };

  it('renders non-strings as constants and drops keys whose value is missing', () => {
    const template = compileTemplate(body, 'value', 'services.crm.operations.create.body', { input: true });
    const rendered = template.render(context({ input: { tag: 'vip' } }));
    expect(rendered).toEqual({
      source: 'ferry',
      count: 3,
      flag: false,
      none: null,
      nested: { tags: ['vip', 1, null], key: `k-${SECRET_VALUE}` },
    });
    expect(Object.hasOwn(rendered as object, 'email')).toBe(false);
  });

  it('aggregates secret names and input use, and returns a fresh value on every render', () => {
    const template = compileTemplate(body, 'value', 'where', { input: true });
    expect(template.secretNames).toEqual(['api_key']);
    expect(template.usesInput).toBe(true);
    expect(template.source).toBe(JSON.stringify(body));
    expect(template.render(context({ input: {} }))).not.toBe(template.render(context({ input: {} })));
    expect(Object.isFrozen(template)).toBe(true);
  });

  it('keeps a __proto__ key as data', () => {
    const template = compileTemplate(
      JSON.parse('{"__proto__": {"polluted": "{{ input.x }}"}}'),
      'value',
      'w',
      {
        input: true,
      },
    );
    const rendered = template.render(context({ input: { x: 'yes' } })) as Record<string, unknown>;
    expect(Object.hasOwn(rendered, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });
});

describe('path mode: every placeholder value is percent-encoded', () => {
  it.each([
    ['../admin', '/contacts/..%2Fadmin'],
    ['../../etc/passwd', '/contacts/..%2F..%2Fetc%2Fpasswd'],
    ['a/b', '/contacts/a%2Fb'],
    ['x?admin=1', '/contacts/x%3Fadmin%3D1'],
    ['x#frag', '/contacts/x%23frag'],
    ['with space', '/contacts/with%20space'],
    ['zoë', '/contacts/zo%C3%AB'],
    ['日本', '/contacts/%E6%97%A5%E6%9C%AC'],
    ['%2E%2E', '/contacts/%252E%252E'],
    ['...', '/contacts/...'],
    ['a.b', '/contacts/a.b'],
    [42, '/contacts/42'],
    [true, '/contacts/true'],
  ])('%j → %s', (id, expected) => {
    const rendered = render('/contacts/{{ input.id }}', 'path', { id });
    expect(rendered).toBe(expected);
    // Whatever the value, the resolved URL stays under /v2/contacts/.
    expect(
      new URL(`https://api.example.com/v2${String(rendered)}`).pathname.startsWith('/v2/contacts/'),
    ).toBe(true);
  });

  it('encodes tenants and secrets too', () => {
    expect(render('/t/{{ tenant }}/{{ secrets.crm.region }}', 'path', {}, { tenant: 'a b' })).toBe(
      '/t/a%20b/eu',
    );
  });

  it.each([
    ['..', 'must not be "." or ".." (path traversal)'],
    ['.', 'must not be "." or ".." (path traversal)'],
    ['', 'must not be empty'],
    [undefined, 'is missing'],
    [null, 'is missing'],
    [{ a: 1 }, 'must be a string, number or boolean'],
    ['\uD800', 'is not well-formed Unicode'],
  ])('%j is a ValidationError naming input.id', (id, problem) => {
    const error = thrown(() => render('/contacts/{{ input.id }}', 'path', { id }));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('input.id');
    expect((error as ValidationError).message).toBe(`input.id ${problem} (path "/contacts/{{ input.id }}")`);
  });

  it('refuses a missing tenant with field tenant', () => {
    const error = thrown(() => render('/t/{{ tenant }}', 'path', {}));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('tenant');
  });
});

describe('header mode', () => {
  it.each([
    ['line feed', 'a\nX-Injected: 1'],
    ['carriage return', 'a\rb'],
    ['CRLF', 'a\r\nb'],
    ['NUL', 'a\0b'],
  ])('refuses a value with a %s, without echoing it', (_, value) => {
    const template = compileTemplate('v={{ input.v }}', 'header', 'services.crm.headers.X-Name', {
      input: true,
    });
    const error = thrown(() => template.render(context({ input: { v: value } })));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('headers.X-Name');
    expect((error as ValidationError).message).toMatch(/CR, LF or NUL; refused/);
    expect((error as ValidationError).message).not.toContain(value);
  });

  it('refuses a secret with CR/LF without putting the secret in the message', () => {
    const template = compileTemplate('Bearer {{ secrets.token }}', 'header', 'services.crm.auth.token', {
      input: false,
    });
    const error = thrown(() => template.render(context({ secrets: { token: `${SECRET_VALUE}\r\n` } })));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('services.crm.auth.token');
    expect((error as ValidationError).message).not.toContain(SECRET_VALUE);
  });

  it.each([
    ['{{ input.n }}', '42'],
    ['{{ input.obj }}', '{"a":1}'],
    ['Bearer {{ secrets.api_key }}', `Bearer ${SECRET_VALUE}`],
    [42, '42'],
    [true, 'true'],
  ])('%j renders %s', (template, expected) => {
    expect(render(template, 'header', INPUT)).toBe(expected);
  });

  it('refuses a missing value', () => {
    const error = thrown(() => render('{{ input.missing }}', 'header', INPUT));
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe('input.missing');
  });
});

describe('input is data, never expanded', () => {
  const hostile = '{{ secrets.api_key }}';

  it.each<[TemplateMode, string, unknown]>([
    ['value', '{{ input.x }}', hostile],
    ['value', 'x={{ input.x }}', `x=${hostile}`],
    ['header', '{{ input.x }}', hostile],
    ['path', '/{{ input.x }}', '/%7B%7B%20secrets.api_key%20%7D%7D'],
  ])('%s %s', (mode, template, expected) => {
    const compiled = compileTemplate(template, mode, 'w', { input: true });
    const rendered = compiled.render(context({ input: { x: hostile } }));
    expect(rendered).toBe(expected);
    expect(JSON.stringify(rendered)).not.toContain(SECRET_VALUE);
    expect(compiled.secretNames).toEqual([]);
  });

  it('keeps nested hostile values literal in an object body', () => {
    const compiled = compileTemplate({ note: '{{ input.note }}' }, 'value', 'w', { input: true });
    expect(compiled.render(context({ input: { note: hostile } }))).toEqual({ note: hostile });
  });
});

describe('unknown secrets', () => {
  it('throw ConfigurationError naming the secret, never a value', () => {
    const template = compileTemplate(
      '{{ secrets.api_key }}:{{ secrets.missing }}',
      'header',
      'services.crm.auth.value',
      {
        input: false,
      },
    );
    const error = thrown(() => template.render(context()));
    expect(error).toBeInstanceOf(ConfigurationError);
    expect((error as ConfigurationError).message).toBe('unknown secret "missing"');
    expect(JSON.stringify({ ...(error as object), message: (error as Error).message })).not.toContain(
      SECRET_VALUE,
    );
  });

  it('throw in value mode too', () => {
    expect(() => render('{{ secrets.nope }}', 'value', {})).toThrow(ConfigurationError);
  });

  it('are listed in secretNames, sorted and unique', () => {
    const template = compileTemplate('{{ secrets.b }}{{ secrets.a }}{{ secrets.b }}', 'value', 'w', {
      input: true,
    });
    expect(template.secretNames).toEqual(['a', 'b']);
    expect(template.usesInput).toBe(false);
  });
});

describe('compile-time refusals', () => {
  it.each([
    ['{{ }}', 'empty placeholder "{{ }}"'],
    ['{{}}', 'empty placeholder "{{}}"'],
    ['{{ input.a + 1 }}', 'unsupported placeholder "{{ input.a + 1 }}"'],
    ['{{ input.a | upper }}', 'unsupported placeholder'],
    ['{{ input.a() }}', 'unsupported placeholder'],
    ['{{ input["a"] }}', 'unsupported placeholder'],
    ['{{ foo }}', 'unknown template root "foo" in "{{ foo }}"'],
    ['{{ process.env.HOME }}', 'unknown template root "process"'],
    ['{{ this }}', 'unknown template root "this"'],
    ['/a/{{ input', 'unclosed "{{" in "/a/{{ input"'],
    ['{{ {{ input }} }}', 'unclosed "{{"'],
    ['input }}', 'unbalanced "}}" in "input }}"'],
    ['{{ input }} }}', 'unbalanced "}}"'],
    ['{{ secrets }}', 'invalid secret name ""'],
    ['{{ secrets.Upper }}', 'invalid secret name "Upper"'],
    ['{{ job }}', 'unknown job field in "{{ job }}"'],
    ['{{ job.name }}', 'unknown job field'],
    ['{{ tenant.id }}', 'tenant has no fields'],
    ['{{ input.a-b }}', 'invalid field "a-b"'],
    ['{{ input..a }}', 'invalid field ""'],
    ['{{ input.01 }}', 'invalid field "01"'],
  ])('%s', (template, reason) => {
    const error = thrown(() =>
      compileTemplate(template, 'value', 'services.crm.operations.x.body', { input: true }),
    );
    expect(error).toBeInstanceOf(TemplateCompileError);
    expect(error).toBeInstanceOf(ConfigurationError);
    expect((error as TemplateCompileError).reason).toContain(reason);
    expect((error as Error).message.startsWith('services.crm.operations.x.body: ')).toBe(true);
  });

  it('names the location inside an object value', () => {
    const error = thrown(() =>
      compileTemplate({ a: ['ok', '{{ nope }}'] }, 'value', 'body', { input: true }),
    );
    expect((error as TemplateCompileError).subPath).toEqual(['a', 1]);
    expect((error as Error).message).toBe('body.a.1: unknown template root "nope" in "{{ nope }}"');
  });

  it.each(['https://{{ input.host }}/v2', '{{ input }}', 'Bearer {{ input.token }}'])(
    'refuses input where producers must not choose (%s)',
    (template) => {
      const error = thrown(() =>
        compileTemplate(template, 'value', 'services.crm.baseUrl', { input: false }),
      );
      expect((error as Error).message).toContain('reads input, which is not allowed here');
    },
  );

  it('allows secrets where input is refused', () => {
    const template = compileTemplate('https://{{ secrets.domain }}/v2', 'value', 'baseUrl', { input: false });
    expect(template.render(context({ secrets: { domain: 'acme.example.com' } }))).toBe(
      'https://acme.example.com/v2',
    );
  });

  it.each<[unknown, TemplateMode, string]>([
    ['a\r\nb', 'header', 'header values must not contain CR, LF or NUL'],
    [42, 'path', 'must be a string'],
    [{ a: 1 }, 'header', 'must be a string, number or boolean'],
    [new Date(0), 'value', 'must be a JSON value'],
    [Number.NaN, 'value', 'must be a JSON value'],
  ])('refuses %j in %s mode', (value, mode, reason) => {
    const error = thrown(() => compileTemplate(value, mode, 'w', { input: true }));
    expect((error as TemplateCompileError).reason.startsWith(reason)).toBe(true);
  });
});

describe('baseUrl templates (mode url): a value fills only its part of the URL (issue 13)', () => {
  const render = (template: string, secrets: Record<string, string>) =>
    compileTemplate(template, 'url', 'services.crm.baseUrl', { input: false }).render(context({ secrets }));

  it.each([
    ['http://{{ secrets.h }}/v1', 'api.example.com', 'http://api.example.com/v1'],
    ['http://{{ secrets.h }}:8080', '10.0.0.1', 'http://10.0.0.1:8080'],
    ['http://{{ secrets.h }}', '[::1]', 'http://[::1]'],
    ['https://{{ secrets.h }}.crm.example.com', 'acme-eu_1', 'https://acme-eu_1.crm.example.com'],
    ['http://api.example.com:{{ secrets.h }}/v1', '8443', 'http://api.example.com:8443/v1'],
    ['https://api.example.com/{{ secrets.h }}', 'acct-7', 'https://api.example.com/acct-7'],
    ['{{ secrets.h }}', 'https://user-api.example.com/v2', 'https://user-api.example.com/v2'],
  ])('%s with %j renders %s', (template, value, expected) => {
    expect(render(template, { h: value })).toBe(expected);
  });

  it.each([
    ['http://{{ secrets.h }}/v1', '127.0.0.1:8080/evil?'],
    ['http://{{ secrets.h }}/v1', '127.0.0.1:8080'],
    ['http://{{ secrets.h }}/v1', 'user:pw@127.0.0.1'],
    ['http://{{ secrets.h }}/v1', 'evil.com#'],
    ['http://{{ secrets.h }}/v1', 'evil.com?'],
    ['http://{{ secrets.h }}/v1', 'evil.com/x'],
    ['http://{{ secrets.h }}/v1', 'evil.com\\x'],
    ['http://{{ secrets.h }}/v1', 'evil .com'],
    ['http://{{ secrets.h }}/v1', 'evil.com\t'],
    ['http://{{ secrets.h }}/v1', 'evil.com\u0000'],
    ['http://{{ secrets.h }}/v1', ''],
    ['http://api.example.com:{{ secrets.h }}', '80/evil'],
    ['http://api.example.com:{{ secrets.h }}', '99999'],
    ['https://api.example.com/{{ secrets.h }}', 'x?y=1'],
    ['https://api.example.com/{{ secrets.h }}', 'x#y'],
    ['{{ secrets.h }}', 'http://a.example.com\\@b'],
    ['{{ secrets.h }}', 'http://a.example.com /x'],
  ])('%s refuses %j as EgressDeniedError, naming the placeholder and never the value', (template, value) => {
    const error = thrown(() => render(template, { h: value })) as Error & { type?: string };
    expect(error.type).toBe('EgressDeniedError');
    expect(error.message).toContain('secrets.h');
    if (value.length > 3) expect(error.message).not.toContain(value);
  });

  it.each([
    ['http://user:pw@{{ secrets.h }}', 'must not contain credentials (use auth)'],
    ['http://{{ secrets.h }}/v1?x=1', 'must not contain a query or fragment'],
  ])('refuses %s at load', (template, reason) => {
    const error = thrown(() => compileTemplate(template, 'url', 'w', { input: false }));
    expect((error as TemplateCompileError).reason).toBe(reason);
  });
});
