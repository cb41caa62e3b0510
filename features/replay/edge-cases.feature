@replay
Feature: Unusual runs replay just as exactly
  Replay must hold at the edges too: empty, unicode and very large webhook
  bodies, the same delivery arriving twice, workers racing each other, events
  from a newer engine, and runs whose logs grow long through many retries.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step | type      | does                             | then |
      | map  | transform | {id: order.id, total: order.sum} | push |
      | push | http_call | POST the mapped order to /orders | done |
      | done | terminate | succeeded                        |      |

  Scenario: An empty webhook body runs and replays
    When "acme" delivers this webhook to "order-sync":
      """json
      {}
      """
    Then the run succeeds
    And the output of "map" is:
      """json
      { "id": null, "total": null }
      """
    And the run replays exactly from its log

  Scenario: A webhook in many scripts and emoji keeps every character through replay
    When "acme" delivers this webhook to "order-sync":
      """json
      { "order": { "id": "Ünïcödé-注文-42 🧾", "sum": 19.99, "note": "שלום — مرحبا — Привет — e\u0301" } }
      """
    Then the run succeeds
    And the output of "map" is:
      """json
      { "id": "Ünïcödé-注文-42 🧾", "total": 19.99 }
      """
    And the run replays exactly from its log

  Scenario: A 1 MiB order replays exactly
    When "acme" delivers an order webhook of 1 MiB to "order-sync"
    Then the run succeeds
    And the run replays exactly from its log
    And the order service received the order exactly once

  @smoke
  Scenario: The same delivery arriving twice starts one run
    Given "acme" delivers an order webhook to "order-sync"
    When the same delivery arrives again
    Then both deliveries belong to one run
    And the run succeeds
    And the order service received the order exactly once

  Scenario: The same delivery arriving again while its run waits on a timer belongs to that run
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And a run of "order-follow-up" that is waiting in "wait"
    When the same delivery arrives again
    Then both deliveries belong to one run
    And the run is waiting in "wait"

  Scenario: Workers racing on the same runs neither duplicate nor lose an event
    Given two workers that do not coordinate are running
    When "acme" delivers 20 order webhooks to "order-sync"
    Then every run succeeds
    And every run replays exactly from its log
    And every order reached the order service exactly once
    And the two workers did collide on the same runs

  Scenario: An event from a newer engine is refused with a clear error and changes nothing
    Given "acme" has a finished run of "order-sync"
    When a newer engine appends a "PaymentCaptured" event to the run
    And the run is replayed
    Then replay refuses the run because "event 11 has type \"PaymentCaptured\", which this engine does not know"
    And the run view is unchanged

  Scenario: Rebuilding the run view refuses an event it does not know rather than guess
    Given "acme" has a finished run of "order-sync"
    When a newer engine appends a "PaymentCaptured" event to the run
    And the run views are rebuilt from the log
    Then rebuilding refuses the run because "which this engine does not know"
    And the run view is unchanged

  Scenario: A run with many retries keeps a long log that still replays exactly
    Given the project "acme" with the workflow "flaky-sync":
      | step | type      | does                                                                      | then |
      | push | http_call | POST the order to /orders, up to 30 attempts, backing off 10 milliseconds | done |
      | done | terminate | succeeded                                                                 |      |
    And the order service fails 25 times
    When "acme" delivers an order webhook to "flaky-sync"
    Then the run succeeds
    And "push" was attempted 26 times
    And the run log has at least 100 events
    And the run replays exactly from its log

  Scenario: An expression that would make an enormous label fails its run instead of filling the log
    Given the project "acme" with the workflow "label-order":
      | step  | type      | does                            | then |
      | label | transform | pad_left('#', order.labelWidth) | done |
      | done  | terminate | succeeded                       |      |
    When "acme" delivers this webhook to "label-order":
      """json
      { "order": { "id": "A-1001", "labelWidth": 100000000 } }
      """
    Then the run fails because "more than the 4194304 a result may be"
    And the run replays exactly from its log

  Scenario: A clean-up asked to repeat itself millions of times more than its text needs finishes at once
    Given the project "acme" with the workflow "clean-reference":
      | step  | type      | does                                      | then |
      | clean | transform | replace(order.ref, '-', '', order.rounds) | done |
      | done  | terminate | succeeded                                 |      |
    When "acme" delivers this webhook to "clean-reference":
      """json
      { "order": { "id": "A-1003", "ref": "AC-ME-1003", "rounds": 300000000 } }
      """
    Then the run succeeds
    And the output of "clean" is:
      """json
      "ACME1003"
      """
    And the run replays exactly from its log

  Scenario: Labels that fit one by one but not together fail the run at the label that would overflow it
    Given the project "acme" with the workflow "box-labels":
      | step   | type      | does                            | then   |
      | front  | transform | pad_left('#', order.labelWidth) | back   |
      | back   | transform | pad_left('#', order.labelWidth) | side   |
      | side   | transform | pad_left('#', order.labelWidth) | top    |
      | top    | transform | pad_left('#', order.labelWidth) | bottom |
      | bottom | transform | pad_left('#', order.labelWidth) | done   |
      | done   | terminate | succeeded                       |        |
    When "acme" delivers this webhook to "box-labels":
      """json
      { "order": { "id": "A-1002", "labelWidth": 4000000 } }
      """
    Then the run fails because "more than the 16777216 a run may hold"
    And the run went through "top"
    And the run did not go through "bottom"
    And the run replays exactly from its log
