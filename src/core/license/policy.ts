/**
 * Access policies for license types: ordered rules saying which department and role may issue,
 * amend, suspend, revoke, query or decrypt which personal fields. The same evaluator runs in
 * execution (writes) and at the API (reads), so a denial names the same rule everywhere.
 *
 * Semantics: for each (action, field) the first rule that matches the caller decides, allow or
 * deny; when no rule matches, the implicit last rule "default-deny" denies.
 */
import { CodedError } from "../errors.ts";
import { type LicenseAction, type LicensePolicy, licenseActions, type PolicyRule } from "./records.ts";

/** Pseudo-fields for the holder's directory entries, which are always sealed. */
export const holderFields = ["holderName", "holderCode"] as const;
export const policyRulesMax = 64;
export const policyRuleIdPattern = /^[a-z0-9][a-z0-9-]{0,47}$/;
export const defaultDenyRule = "default-deny";

export interface PolicyCaller {
  readonly dept: string;
  readonly roles: readonly string[];
}

export interface PolicyScope {
  /** Departments the license type lists as issuers. */
  readonly issuers: readonly string[];
  /** The license's issuing department, when there is a license (not for "issue"). */
  readonly issuerDept: string | null;
}

export interface PolicyDecision {
  readonly allowed: boolean;
  /** The rule that decided. */
  readonly rule: string;
}

export interface DecryptDecision {
  /** Fields the caller may read, in the order asked. */
  readonly fields: readonly string[];
  /** The rule that allowed each field. */
  readonly rules: readonly string[];
  /** The first field refused, with the rule that refused it. */
  readonly denied: { readonly field: string; readonly rule: string } | null;
}

/** What a new type gets unless its definer says otherwise. */
export function defaultRules(): PolicyRule[] {
  return [
    {
      id: "issuers-issue",
      effect: "allow",
      dept: "$issuers",
      roles: ["officer", "admin"],
      actions: ["issue"],
      fields: [],
    },
    {
      id: "issuer-manage",
      effect: "allow",
      dept: "$issuer",
      roles: ["officer", "admin"],
      actions: ["amend", "suspend", "revoke", "query", "decrypt"],
      fields: ["*"],
    },
    {
      id: "issuer-audit",
      effect: "allow",
      dept: "$issuer",
      roles: ["auditor"],
      actions: ["query"],
      fields: [],
    },
    { id: "members-query", effect: "allow", dept: "*", roles: ["*"], actions: ["query"], fields: [] },
  ];
}

function deptMatches(rule: PolicyRule, caller: PolicyCaller, scope: PolicyScope): boolean {
  if (rule.dept === "*") return true;
  if (rule.dept === "$issuer") return scope.issuerDept !== null && caller.dept === scope.issuerDept;
  if (rule.dept === "$issuers") return scope.issuers.includes(caller.dept);
  return rule.dept === caller.dept;
}

function ruleMatches(
  rule: PolicyRule,
  caller: PolicyCaller,
  scope: PolicyScope,
  action: LicenseAction,
): boolean {
  return (
    rule.actions.includes(action) &&
    deptMatches(rule, caller, scope) &&
    (rule.roles.includes("*") || rule.roles.some((r) => caller.roles.includes(r)))
  );
}

export function decide(
  policy: LicensePolicy,
  caller: PolicyCaller,
  scope: PolicyScope,
  action: Exclude<LicenseAction, "decrypt">,
): PolicyDecision {
  for (const rule of policy.rules) {
    if (ruleMatches(rule, caller, scope, action)) return { allowed: rule.effect === "allow", rule: rule.id };
  }
  return { allowed: false, rule: defaultDenyRule };
}

/** Decides field by field; `asked` null means "every field I may see". */
export function decideDecrypt(
  policy: LicensePolicy,
  caller: PolicyCaller,
  scope: PolicyScope,
  personalFields: readonly string[],
  asked: readonly string[] | null,
): DecryptDecision {
  const all = [...holderFields, ...personalFields];
  const wanted = asked ?? all;
  const fields: string[] = [];
  const rules: string[] = [];
  for (const field of wanted) {
    let verdict: PolicyDecision = { allowed: false, rule: defaultDenyRule };
    if (all.includes(field)) {
      for (const rule of policy.rules) {
        if (!ruleMatches(rule, caller, scope, "decrypt")) continue;
        if (!rule.fields.includes("*") && !rule.fields.includes(field)) continue;
        verdict = { allowed: rule.effect === "allow", rule: rule.id };
        break;
      }
    }
    if (verdict.allowed) {
      fields.push(field);
      rules.push(verdict.rule);
    } else if (asked !== null) {
      return { fields, rules, denied: { field, rule: verdict.rule } };
    }
  }
  return { fields, rules, denied: null };
}

export function policyDenied(rule: string, what: string): CodedError {
  return new CodedError("POLICY_DENIED", `${what}: denied by rule ${rule}`, "policy");
}

/** Validates rules supplied by a type's definer; throws PAYLOAD_INVALID naming the rule. */
export function checkRules(rules: readonly PolicyRule[], personalFields: readonly string[]): void {
  if (rules.length > policyRulesMax) invalidRule("rules", `more than ${policyRulesMax} rules`);
  const ids = new Set<string>();
  const readable = new Set<string>([...holderFields, ...personalFields, "*"]);
  rules.forEach((rule, i) => {
    const at = `rules[${i}]`;
    if (!policyRuleIdPattern.test(rule.id))
      invalidRule(`${at}.id`, `must match ${policyRuleIdPattern.source}`);
    if (rule.id === defaultDenyRule || ids.has(rule.id))
      invalidRule(`${at}.id`, `duplicate or reserved id ${rule.id}`);
    ids.add(rule.id);
    if (rule.actions.length === 0) invalidRule(`${at}.actions`, "must name at least one action");
    for (const action of rule.actions) {
      if (!(licenseActions as readonly string[]).includes(action))
        invalidRule(`${at}.actions`, `unknown action ${action}`);
    }
    if (rule.roles.length === 0) invalidRule(`${at}.roles`, "must name at least one role or *");
    for (const field of rule.fields) {
      if (!readable.has(field)) invalidRule(`${at}.fields`, `${field} is not a personal field of this type`);
    }
  });
}

function invalidRule(field: string, message: string): never {
  throw new CodedError("PAYLOAD_INVALID", `${field}: ${message}`, field);
}
