@replay
Feature: Replay names the first decision that no longer matches the log
  When a step's behaviour changes under an existing run, because a published
  workflow was edited in place or because the engine's own logic changed,
  replaying the run must stop at the first event the engine would now decide
  differently, and say what differs. Nothing else may be blamed.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  Scenario: An untouched run replays without divergence
    Given "acme" has a finished run of "order-sync"
    When the run is replayed
    Then replay finds no divergence

  @smoke
  Scenario: A transformation edited in place diverges at the step's recorded output
    Given "acme" has a finished run of "order-sync"
    When someone edits version 1 of "order-sync" behind the engine's back:
      | step     | type      | does                                                       | then                |
      | map      | transform | {id: order.id, total: order.sum, currency: order.currency} | push                |
      | push     | http_call | POST the mapped order to /orders                           | check               |
      | check    | branch    | when push answered 200                                     | done, else rejected |
      | done     | terminate | succeeded                                                  |                     |
      | rejected | terminate | failed: the order service refused it                       |                     |
    And the run is replayed
    Then replay reports the first divergence at event 3
    And the divergence says "data.output.currency: engine decides \"EUR\", log has nothing"

  Scenario: A request sent somewhere else diverges at the prepared request
    Given "acme" has a finished run of "order-sync"
    When someone edits version 1 of "order-sync" behind the engine's back:
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | PUT the mapped order to /orders      | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the run is replayed
    Then replay reports the first divergence at event 5
    And the divergence says "data.method: engine decides \"PUT\", log has \"POST\""

  Scenario: A branch condition edited in place diverges at the branch decision
    Given "acme" has a finished run of "order-sync"
    When someone edits version 1 of "order-sync" behind the engine's back:
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 201               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the run is replayed
    Then replay reports the first divergence at event 9
    And the divergence shows the engine now decides "rejected" where the log has "done"

  Scenario: An edit that changes no decision of the run is still caught
    Given "acme" has a finished run of "order-sync"
    When someone edits version 1 of "order-sync" behind the engine's back:
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: refused by the order service |                     |
    And the run is replayed
    Then replay says the version the run was pinned to has been changed

  Scenario: Engine logic changed behind a flag diverges where the old logic decided
    Given the order service answers every order with 409
    And "acme" has a finished run of "order-sync"
    When the run is replayed by an engine that treats a conflict as done
    Then replay reports the first divergence at event 7
    And the divergence says "type: engine decides \"StepSucceeded\", log has \"StepFailed\""
