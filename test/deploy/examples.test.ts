/**
 * examples/ (systemd units, Kubernetes manifests) held to the code, so they cannot drift: commands Ferry has,
 * variables Ferry reads, stop timeouts above the shutdown budget, probes on the ports Ferry listens on, mounts
 * where the variables point, a services file that loads.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import yaml from 'js-yaml';
import { describe, expect, it } from 'vitest';

import { API_CLOSE_WAIT_MS } from '../../src/cli/api-server.ts';
import { SHUTDOWN_SLACK_MS } from '../../src/cli/shutdown.ts';
import { readEnv } from '../../src/core/env.ts';
import { ROOT, runFerry, tempDir } from '../helpers/processes.ts';
import { durationMs, ferryCommands, ferryReads } from './compose.ts';

const EXAMPLES = join(ROOT, 'examples');

/** What a worker's SIGTERM may take with this environment (docs/operations.md § Shutdown). */
function shutdownBudgetMs(env: Record<string, string>): number {
  const parsed = readEnv(env);
  return parsed.FERRY_SHUTDOWN_TIMEOUT_MS + parsed.FERRY_SHUTDOWN_HANDBACK_MS + SHUTDOWN_SLACK_MS;
}

/** A unit file's [Service] settings; repeated keys (Environment=) collected in order. */
async function readUnit(name: string): Promise<Map<string, string[]>> {
  const settings = new Map<string, string[]>();
  let section = '';
  for (const raw of (await readFile(join(EXAMPLES, 'systemd', name), 'utf8')).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('[')) section = line;
    else if (section === '[Service]') {
      const at = line.indexOf('=');
      const key = line.slice(0, at);
      settings.set(key, [...(settings.get(key) ?? []), line.slice(at + 1)]);
    }
  }
  return settings;
}

interface Container {
  args: string[];
  env: { name: string; value?: string; valueFrom?: unknown }[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  volumeMounts: { name: string; mountPath: string; subPath?: string }[];
  securityContext: { allowPrivilegeEscalation: boolean; readOnlyRootFilesystem: boolean };
}

interface Manifest {
  kind: string;
  metadata: { name: string };
  spec: {
    selector: { matchLabels?: Record<string, string> } & Record<string, string>;
    ports?: { targetPort: string }[];
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        terminationGracePeriodSeconds: number;
        securityContext: { runAsNonRoot: boolean };
        containers: Container[];
        volumes: { name: string; configMap?: { name: string }; secret?: { secretName: string } }[];
      };
    };
  };
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

async function manifests(): Promise<Manifest[]> {
  const kustomization = yaml.load(
    await readFile(join(EXAMPLES, 'kubernetes', 'kustomization.yaml'), 'utf8'),
  ) as { resources: string[] };
  const all: Manifest[] = [];
  for (const file of kustomization.resources)
    all.push(...(yaml.loadAll(await readFile(join(EXAMPLES, 'kubernetes', file), 'utf8')) as Manifest[]));
  return all;
}

describe('examples/systemd', () => {
  it.each(['ferry-worker.service', 'ferry-api.service'])(
    '%s runs a ferry command with variables Ferry reads, stops within its budget, hardened',
    async (name) => {
      const unit = await readUnit(name);
      const commands = await ferryCommands();
      const [, command] = /dist\/cli\/main\.js (\S+)$/.exec(unit.get('ExecStart')![0]!) ?? [];
      expect(commands).toContain(command);
      expect(name).toBe(`ferry-${command}.service`);
      const env = Object.fromEntries(
        (unit.get('Environment') ?? []).map((assignment) => assignment.split('=', 2) as [string, string]),
      );
      for (const key of Object.keys(env)) expect(ferryReads(key), key).toBe(true);
      // The credential lands where FERRY_SECRETS_KEY_FILE points.
      const [credential] = unit.get('LoadCredential')![0]!.split(':');
      expect(env.FERRY_SECRETS_KEY_FILE).toBe(`/run/credentials/${name}/${credential}`);
      expect(unit.get('EnvironmentFile')).toHaveLength(1);
      expect(unit.get('KillSignal')).toEqual(['SIGTERM']);
      expect(unit.get('Restart')).toEqual(['on-failure']);
      expect(durationMs(unit.get('TimeoutStopSec')![0]!)).toBeGreaterThan(
        command === 'worker' ? shutdownBudgetMs(env) : API_CLOSE_WAIT_MS + 2 * SHUTDOWN_SLACK_MS,
      );
      for (const setting of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'PrivateTmp=yes'])
        expect(unit.get(setting.split('=')[0]!), setting).toEqual([setting.split('=')[1]]);
    },
  );
});

describe('examples/kubernetes', () => {
  it('Deployments run ferry commands with variables Ferry reads; probes hit the ports Ferry listens on', async () => {
    const all = await manifests();
    const commands = await ferryCommands();
    const deployments = all.filter((m) => m.kind === 'Deployment');
    expect(deployments.map((d) => d.metadata.name).sort()).toEqual(['ferry-api', 'ferry-worker']);
    for (const deployment of deployments) {
      const pod = deployment.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      const [container] = pod.containers;
      const command = container!.args[0]!;
      expect(commands).toContain(command);
      for (const { name } of container!.env) expect(ferryReads(name), name).toBe(true);
      const env = Object.fromEntries(
        container!.env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]),
      );
      // The listener the probes reach, on every interface of the pod.
      const listenPort = command === 'worker' ? env.FERRY_METRICS_PORT : env.PORT;
      expect(command === 'worker' ? env.FERRY_METRICS_HOST : env.HOST).toBe('0.0.0.0');
      for (const probe of [container!.livenessProbe, container!.readinessProbe]) {
        const port = container!.ports.find((p) => p.name === probe.httpGet.port);
        expect(String(port?.containerPort), `${command} probe port`).toBe(listenPort);
      }
      expect(container!.livenessProbe.httpGet.path).toBe('/healthz');
      expect(container!.readinessProbe.httpGet.path).toBe('/readyz');
      // Files where the variables point: the services file (ConfigMap), the master key (Secret).
      const mounts = new Map(container!.volumeMounts.map((m) => [m.name, m]));
      const servicesMount = mounts.get('services')!;
      expect(servicesMount.mountPath).toBe(env.FERRY_SERVICES);
      expect(env.FERRY_SECRETS_KEY_FILE?.startsWith(`${mounts.get('secrets')!.mountPath}/`)).toBe(true);
      expect(container!.securityContext).toMatchObject({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
      });
      expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThan(
        command === 'worker' ? shutdownBudgetMs(env) : API_CLOSE_WAIT_MS + 2 * SHUTDOWN_SLACK_MS,
      );
    }
    const service = all.find((m) => m.kind === 'Service')!;
    const api = deployments.find((d) => d.metadata.name === 'ferry-api')!;
    expect(api.spec.template.metadata.labels).toMatchObject(service.spec.selector);
    expect(api.spec.template.spec.containers[0]!.ports.map((p) => p.name)).toContain(
      service.spec.ports![0]!.targetPort,
    );
  });

  it('the ConfigMap holds a services file Ferry loads, and the Secret has every key the pods read', async () => {
    const all = await manifests();
    const configMap = all.find((m) => m.kind === 'ConfigMap')!;
    const file = join(await tempDir('ferry-k8s'), 'services.yaml');
    await writeFile(file, configMap.data!['services.yaml']!);
    const check = await runFerry(['config', 'check', file]);
    expect(check.code, check.stderr).toBe(0);
    const secret = all.find((m) => m.kind === 'Secret')!;
    const read = new Set<string>();
    for (const deployment of all.filter((m) => m.kind === 'Deployment')) {
      const pod = deployment.spec.template.spec;
      for (const { valueFrom } of pod.containers[0]!.env) {
        const ref = (valueFrom as { secretKeyRef?: { name: string; key: string } } | undefined)?.secretKeyRef;
        if (ref !== undefined) {
          expect(ref.name).toBe(secret.metadata.name);
          read.add(ref.key);
        }
      }
      expect(pod.volumes.find((v) => v.secret !== undefined)?.secret?.secretName).toBe(secret.metadata.name);
      expect(pod.volumes.find((v) => v.configMap !== undefined)?.configMap?.name).toBe(
        configMap.metadata.name,
      );
    }
    for (const key of [...read, 'secrets-key']) expect(Object.keys(secret.stringData!)).toContain(key);
  });
});
