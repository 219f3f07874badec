import { ServicesFileError } from '../../src/core/services/load.ts';

/** The `path: message` lines of the ServicesFileError `load` throws; fails the test if it throws none. */
export function servicesFileIssues(load: () => unknown): string[] {
  try {
    load();
  } catch (error) {
    if (error instanceof ServicesFileError)
      return error.issues.map((issue) => `${issue.path}: ${issue.message}`);
    throw error;
  }
  throw new Error('expected a ServicesFileError');
}
