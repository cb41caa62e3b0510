@tenancy
Feature: A project reaches only its own runs
  MeshHook hosts many teams on one database. Whatever door a team knocks on —
  reading a run over HTTP, replaying it, verifying it, rebuilding its view,
  reading its audit trail or taking any operator action on it, finished or
  still waiting — a run of another team does not exist for it, and knocking
  leaves that run exactly as it was. Each refusal is
  checked against the same door opening for the team's own run, so "not found"
  always means "not yours". Two teams may even name their workflows alike.
  Nor can someone with the database send one team's commands to another by
  renaming projects: the engine signed each project's name when it made it.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |
    And the project "globex" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |

  Scenario Outline: Another project's run does not exist for a project that <reach> it
    Given "acme" has a finished run of "order-sync"
    And "globex" has a finished run of "order-sync"
    When "globex" <reach> "acme"'s run
    Then "globex" is told that run does not exist
    And the same request for its own run is answered
    And "acme"'s run is untouched

    Examples:
      | reach                    |
      | reads                    |
      | replays                  |
      | verifies                 |
      | rebuilds the view of     |
      | reads the audit trail of |
      | cancels                  |
      | pauses                   |
      | unpauses                 |
      | retries a step of        |
      | skips a step of          |
      | resumes                  |
      | patches the input of     |

  Scenario Outline: A run still waiting is left as it was when another project <reach> it
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "globex" has a finished run of "order-sync"
    And a run of "order-follow-up" that is waiting in "wait"
    When "globex" <reach> "acme"'s run
    Then "globex" is told that run does not exist
    And the same request for its own run is answered
    And "acme"'s run is untouched

    Examples:
      | reach                |
      | cancels              |
      | pauses               |
      | skips a step of      |
      | patches the input of |

  Scenario Outline: A failed run, which its own project could still fix, is left as it was when another project <reach> it
    Given "globex" has a finished run of "order-sync"
    And a run of "order-sync" that is failed at "push"
    When "globex" <reach> "acme"'s run
    Then "globex" is told that run does not exist
    And the same request for its own run is answered
    And "acme"'s run is untouched

    Examples:
      | reach             |
      | retries a step of |
      | resumes           |
      | skips a step of   |

  Scenario: The isolation holds the other way round too
    Given "globex" has a finished run of "order-sync"
    And "acme" has a finished run of "order-sync"
    When "acme" replays "globex"'s run
    Then "acme" is told that run does not exist
    And the same request for its own run is answered
    And "globex"'s run is untouched

  Scenario: Two projects with a workflow of the same name keep their runs apart
    When "acme" delivers an order webhook to "order-sync"
    And "globex" delivers an order webhook to "order-sync"
    Then every run succeeds
    And each project's run ran its own project's workflow

  @tamper
  Scenario: Two projects' names swapped in the database take no command to the wrong project
    Given "acme" has a finished run of "order-sync"
    And "globex" has a finished run of "order-sync"
    When someone swaps the names of "acme" and "globex" behind the engine's back
    Then the engine refuses to act for "acme" until its owner has checked it
    And verifying every project names "acme" and "globex" as renamed behind the engine's back

  Scenario Outline: A run held for review stays held when another project <reach> it
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "globex" has a finished run of "order-sync"
    And a run of "order-follow-up" that is paused in "wait"
    When "globex" <reach> "acme"'s run
    Then "globex" is told that run does not exist
    And the same request for its own run is answered
    And "acme"'s run is untouched

    Examples:
      | reach                    |
      | unpauses                 |
      | resumes                  |
      | reads the audit trail of |

  @secrets
  Scenario: A project cannot send an order with another project's API key by naming it
    Given the project "globex" with the workflow "keyed-sync":
      | step | type      | does                                                          | then |
      | map  | transform | {id: order.id, total: order.sum}                              | push |
      | push | http_call | POST the mapped order to /orders with the "orders-api" secret | done |
      | done | terminate | succeeded                                                     |      |
    And "acme" keeps the order service's API key in its vault as "orders-api"
    When "globex" delivers an order webhook to "keyed-sync"
    Then the run fails because "no secret \"orders-api\""
    And the order service was never called

  @realtime @intervention
  Scenario: A viewer of one project sees nothing of an operator canceling another project's waiting run
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And "Mallory" opens the live log of "globex"
    And "globex" has a finished run of "order-sync"
    And a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "the customer withdrew the order"
    Then the run is canceled
    And "Mallory" sees "globex"'s run but nothing of "acme"'s
